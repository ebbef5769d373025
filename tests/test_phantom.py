"""Tests for the synthetic cephalogram generator (chh_lib.data.phantom)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from chh_lib.data.disagreement import along_across_sd
from chh_lib.data.phantom import (
    _SIGMA_ACROSS_MM,
    _SIGMA_ALONG_MM,
    CONTOUR_LANDMARKS,
    FIELD_OF_VIEW_MM,
    HARD_KINDS,
    PHANTOM_VERSION,
    PhantomCase,
    _annotations_mm,
    _placed_anatomy,
    annotator_disagreement,
    annotator_model_sd_mm,
    contour_tangents_mm,
    generate_phantom,
    hard_case_mask,
    phantom_pixel_size_mm,
    render_case,
)
from chh_lib.landmarks import ISBI_2015

SMALL = (160, 200)
MEDIUM = (320, 400)
SELLA = ISBI_2015.index("sella")


def _to_mm(points_px: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    return (points_px + 0.5) * np.asarray(phantom_pixel_size_mm(image_size))


def _gradient_magnitude(image: np.ndarray, sigma_px: float = 1.0) -> np.ndarray:
    smooth = ndimage.gaussian_filter(image.astype(np.float32), sigma_px)
    return np.hypot(ndimage.sobel(smooth, axis=1), ndimage.sobel(smooth, axis=0))


def _max_near(values: np.ndarray, point_px: np.ndarray, radius_px: float) -> float:
    rows, cols = np.ogrid[: values.shape[0], : values.shape[1]]
    disk = (cols - point_px[0]) ** 2 + (rows - point_px[1]) ** 2 <= radius_px**2
    return float(values[disk].max())


@pytest.fixture(scope="module")
def small_cases() -> list[PhantomCase]:
    return [render_case(7, index, SMALL) for index in range(50)]


def test_constants() -> None:
    assert isinstance(PHANTOM_VERSION, str) and PHANTOM_VERSION
    assert FIELD_OF_VIEW_MM == (192.0, 240.0)
    assert len(CONTOUR_LANDMARKS) == ISBI_2015.num_landmarks == 19
    assert not CONTOUR_LANDMARKS[SELLA]
    assert sum(CONTOUR_LANDMARKS) == 18


def test_pixel_size() -> None:
    assert phantom_pixel_size_mm((640, 800)) == pytest.approx((0.3, 0.3))
    assert phantom_pixel_size_mm((160, 200)) == pytest.approx((1.2, 1.2))
    assert phantom_pixel_size_mm((1935, 2400)) == pytest.approx((192.0 / 1935, 0.1))
    with pytest.raises(ValueError):
        phantom_pixel_size_mm((0, 10))


def test_shapes_and_dtypes() -> None:
    case = render_case(0, 0, (200, 160))
    assert case.image.shape == (160, 200) and case.image.dtype == np.uint8
    assert case.annotations_px.shape == (2, 19, 2) and case.annotations_px.dtype == np.float64
    assert case.true_px.shape == (19, 2) and case.true_px.dtype == np.float64
    assert case.tangent.shape == (19, 2) and case.tangent.dtype == np.float64
    assert case.is_hard is False and case.hard_kinds == ()
    assert np.isfinite(case.annotations_px).all() and np.isfinite(case.true_px).all()


def test_default_size_and_contrast() -> None:
    case = render_case(0, 1)
    assert case.image.shape == (800, 640)
    # Dark background, bright bone: a wide range of grey values is used.
    low, high = np.percentile(case.image, [5, 99.5])
    assert low < 60 and high > 170


def test_deterministic() -> None:
    first, second = render_case(3, 5, SMALL), render_case(3, 5, SMALL)
    assert first.image.tobytes() == second.image.tobytes()
    np.testing.assert_array_equal(first.annotations_px, second.annotations_px)
    np.testing.assert_array_equal(first.true_px, second.true_px)
    np.testing.assert_array_equal(first.tangent, second.tangent)
    hard_a, hard_b = render_case(3, 5, SMALL, hard=True), render_case(3, 5, SMALL, hard=True)
    assert hard_a.image.tobytes() == hard_b.image.tobytes() and hard_a.hard_kinds == hard_b.hard_kinds


def test_global_random_state_untouched() -> None:
    np.random.seed(123)
    expected = np.random.random(3)
    np.random.seed(123)
    render_case(0, 0, SMALL, hard=True)
    np.testing.assert_array_equal(np.random.random(3), expected)


@pytest.mark.parametrize("other", [(3, 6), (4, 5)])
def test_different_index_or_seed_differs(other: tuple[int, int]) -> None:
    reference, changed = render_case(3, 5, SMALL), render_case(*other, SMALL)
    assert reference.image.tobytes() != changed.image.tobytes()
    assert np.abs(reference.true_px - changed.true_px).max() > 1.0


def test_resolution_independent_geometry() -> None:
    small, large = render_case(2, 3, SMALL), render_case(2, 3, MEDIUM)
    np.testing.assert_allclose(_to_mm(small.true_px, SMALL), _to_mm(large.true_px, MEDIUM), atol=1e-9)
    np.testing.assert_allclose(
        _to_mm(small.annotations_px, SMALL), _to_mm(large.annotations_px, MEDIUM), atol=1e-9
    )
    np.testing.assert_allclose(small.tangent, large.tangent, atol=1e-9)


def test_full_isbi_resolution() -> None:
    case = render_case(0, 0, (1935, 2400))
    assert case.image.shape == (2400, 1935)
    reference = render_case(0, 0, SMALL)
    np.testing.assert_allclose(_to_mm(case.true_px, (1935, 2400)), _to_mm(reference.true_px, SMALL), atol=1e-9)


def test_normal_cases_keep_landmarks_inside(small_cases: list[PhantomCase]) -> None:
    size = np.asarray(SMALL)
    margin_px = 5.0 / np.asarray(phantom_pixel_size_mm(SMALL))  # 5 mm
    for case in small_cases:
        for points in (case.true_px, *case.annotations_px):
            assert (points >= margin_px - 0.5).all()
            assert (points <= size - 0.5 - margin_px).all()


def test_tangents(small_cases: list[PhantomCase]) -> None:
    contour = np.asarray(CONTOUR_LANDMARKS)
    for case in small_cases[:10]:
        np.testing.assert_allclose(np.linalg.norm(case.tangent[contour], axis=1), 1.0, atol=1e-9)
        np.testing.assert_array_equal(case.tangent[~contour], 0.0)


def test_annotator_disagreement(small_cases: list[PhantomCase]) -> None:
    stats = annotator_disagreement(small_cases, phantom_pixel_size_mm(SMALL))
    contour = np.asarray(CONTOUR_LANDMARKS)
    assert stats["mean_distance_mm"].shape == (19,) and stats["along_across_ratio"].shape == (19,)
    assert (stats["along_across_ratio"][contour] > 2.0).all()
    assert np.isnan(stats["along_across_ratio"][~contour]).all()
    assert (stats["mean_distance_mm"] > 0.5).all() and (stats["mean_distance_mm"] < 4.0).all()
    # The same cases measured at another resolution give the same numbers in mm.
    medium = [render_case(7, index, MEDIUM) for index in range(10)]
    np.testing.assert_allclose(
        annotator_disagreement(medium, phantom_pixel_size_mm(MEDIUM))["mean_distance_mm"],
        annotator_disagreement(small_cases[:10], phantom_pixel_size_mm(SMALL))["mean_distance_mm"],
        rtol=1e-9,
    )


def test_annotators_are_close_to_truth(small_cases: list[PhantomCase]) -> None:
    pixel_mm = np.asarray(phantom_pixel_size_mm(SMALL))
    errors_mm = np.stack([np.linalg.norm((c.annotations_px - c.true_px) * pixel_mm, axis=-1) for c in small_cases])
    assert errors_mm.max() < 8.0
    assert 0.5 < errors_mm.mean() < 2.5


@pytest.mark.parametrize(
    ("num_images", "fraction"), [(100, 0.1), (150, 0.1), (37, 0.25), (10, 0.0), (10, 1.0), (25, 0.1)]
)
def test_hard_case_mask_counts(num_images: int, fraction: float) -> None:
    mask = hard_case_mask(num_images, seed=4, hard_fraction=fraction)
    assert mask.shape == (num_images,) and mask.dtype == bool
    assert mask.sum() == round(fraction * num_images)
    np.testing.assert_array_equal(mask, hard_case_mask(num_images, seed=4, hard_fraction=fraction))


def test_hard_case_mask_spread() -> None:
    for seed in range(5):
        mask = hard_case_mask(150, seed, 0.1)
        # A 100/25/25 split gets 10/2-3/2-3 hard cases.
        assert mask[:100].sum() in (9, 10, 11)
        assert mask[100:125].sum() >= 2 and mask[125:].sum() >= 2
    with pytest.raises(ValueError):
        hard_case_mask(10, 0, 1.5)


def test_generate_phantom_matches_render_case() -> None:
    cases = list(generate_phantom(20, seed=9, image_size=SMALL, hard_fraction=0.1))
    mask = hard_case_mask(20, 9, 0.1)
    assert len(cases) == 20
    assert [c.is_hard for c in cases] == mask.tolist()
    for index in (0, int(np.flatnonzero(mask)[0])):
        expected = render_case(9, index, SMALL, hard=bool(mask[index]))
        assert cases[index].image.tobytes() == expected.image.tobytes()


def test_hard_case_same_anatomy_other_image() -> None:
    for index in range(8):
        normal, hard = render_case(1, index, SMALL), render_case(1, index, SMALL, hard=True)
        assert hard.is_hard and hard.hard_kinds and set(hard.hard_kinds) <= set(HARD_KINDS)
        np.testing.assert_array_equal(hard.true_px, normal.true_px)
        np.testing.assert_array_equal(hard.annotations_px, normal.annotations_px)
        changed = np.abs(hard.image.astype(int) - normal.image.astype(int)) > 25
        assert changed.mean() > 0.005


def test_contour_landmarks_lie_on_edges() -> None:
    pixel_mm = phantom_pixel_size_mm(MEDIUM)[0]
    for index in range(12):
        case = render_case(5, index, MEDIUM)
        gradient = _gradient_magnitude(case.image)
        median = float(np.median(gradient))
        for k, point in enumerate(case.true_px):
            radius_mm = 1.5 if CONTOUR_LANDMARKS[k] else 8.0  # sella: the rim of the fossa
            assert _max_near(gradient, point, radius_mm / pixel_mm) > 4.0 * median, ISBI_2015.names[k]


def test_annotations_off_edges_are_rarer_than_truth_on_edges() -> None:
    """Edges at the true point are stronger than at random points nearby (3-10 mm away)."""
    rng = np.random.default_rng(0)
    pixel_mm = phantom_pixel_size_mm(MEDIUM)[0]
    on_edge, off_edge = [], []
    for index in range(6):
        case = render_case(6, index, MEDIUM)
        gradient = _gradient_magnitude(case.image)
        for k in np.flatnonzero(CONTOUR_LANDMARKS):
            point = case.true_px[k]
            angle = rng.uniform(0, 2 * np.pi)
            away = point + rng.uniform(3.0, 10.0) / pixel_mm * np.array([np.cos(angle), np.sin(angle)])
            on_edge.append(_max_near(gradient, point, 0.6 / pixel_mm))
            off_edge.append(_max_near(gradient, away, 0.6 / pixel_mm))
    assert np.median(on_edge) > 2.0 * np.median(off_edge)


def test_hard_cases_hide_landmarks() -> None:
    """Every hard case loses most of the edge evidence at one or more landmarks."""
    radius_px = 1.5 / phantom_pixel_size_mm(MEDIUM)[0]
    for index in range(10):
        normal, hard = render_case(8, index, MEDIUM), render_case(8, index, MEDIUM, hard=True)
        normal_gradient, hard_gradient = _gradient_magnitude(normal.image), _gradient_magnitude(hard.image)
        kept = [
            _max_near(hard_gradient, point, radius_px) / _max_near(normal_gradient, point, radius_px)
            for point in normal.true_px
        ]
        assert min(kept) < 0.4, hard.hard_kinds


def test_cropped_cases_blank_some_landmarks() -> None:
    found = 0
    for index in range(30):
        case = render_case(2, index, MEDIUM, hard=True)
        if "cropped" not in case.hard_kinds:
            continue
        found += 1
        local_std = ndimage.uniform_filter(case.image.astype(np.float32) ** 2, 9) - ndimage.uniform_filter(
            case.image.astype(np.float32), 9
        ) ** 2
        flat = np.sqrt(np.clip(local_std, 0, None))
        points = np.clip(np.round(case.true_px).astype(int), 0, np.asarray(MEDIUM) - 1)
        # Blanked landmarks see only noise around them (plus possibly an occluder).
        assert (flat[points[:, 1], points[:, 0]] < 12.0).sum() >= 2
    assert found >= 5


def test_rasteriser_coverage_is_exact_for_a_square() -> None:
    from chh_lib.data.phantom import _rasterise

    square_px = np.array([(4.25, 3.5), (14.75, 3.5), (14.75, 13.5), (4.25, 13.5)])
    coverage = _rasterise([square_px], [2.0], (20, 20))
    assert coverage.sum() == pytest.approx(2.0 * 10.5 * 10.0, rel=1e-5)
    columns = coverage.sum(axis=0)
    assert (columns * np.arange(20)).sum() / columns.sum() == pytest.approx(9.5, abs=1e-5)
    np.testing.assert_allclose(coverage[8, 4:16], 2.0 * np.array([0.25] + [1.0] * 10 + [0.25]), atol=1e-5)


def test_contour_tangents_without_rendering(small_cases: list[PhantomCase]) -> None:
    pixel_mm = np.asarray(phantom_pixel_size_mm(SMALL))
    contour = np.asarray(CONTOUR_LANDMARKS)
    for index, case in enumerate(small_cases[:5]):
        tangent = contour_tangents_mm(7, index)  # (19, 2), mm space
        expected = case.tangent * pixel_mm
        expected[contour] /= np.linalg.norm(expected[contour], axis=1, keepdims=True)
        np.testing.assert_allclose(tangent, expected, atol=1e-12)
    # anisotropic pixels: the same physical direction
    wide = render_case(7, 0, (320, 200))
    direction = wide.tangent * np.asarray(phantom_pixel_size_mm((320, 200)))
    cosine = np.sum(direction[contour] * contour_tangents_mm(7, 0)[contour], axis=1)
    np.testing.assert_allclose(cosine / np.linalg.norm(direction[contour], axis=1), 1.0, atol=1e-12)


def test_annotator_model_matches_the_simulated_annotators() -> None:
    # Many cases without rendering: the generator's first draws, then its annotators.
    differences, tangents = [], []
    for index in range(3000):
        rng = np.random.default_rng([3, index])
        _, landmarks_mm, tangent, _ = _placed_anatomy(rng)
        marks = _annotations_mm(rng, landmarks_mm, tangent)
        differences.append(marks[0] - marks[1])
        tangents.append(tangent)
    measured = along_across_sd(np.stack(differences), np.stack(tangents))
    sd_along, sd_across = annotator_model_sd_mm()
    contour = np.asarray(CONTOUR_LANDMARKS)
    np.testing.assert_allclose(measured.sd_along_mm[contour], sd_along[contour], rtol=0.05)
    np.testing.assert_allclose(measured.sd_across_mm[contour], sd_across[contour], rtol=0.05)
    np.testing.assert_allclose(measured.ratio[contour], (sd_along / sd_across)[contour], rtol=0.07)
    assert sd_along[SELLA] == sd_across[SELLA]
    # The model's ratio is the ratio of the parameters sigma_along / sigma_across (no bias in an SD).
    np.testing.assert_allclose((sd_along / sd_across)[contour], np.asarray(_SIGMA_ALONG_MM)[contour] / _SIGMA_ACROSS_MM)


def test_annotator_disagreement_is_the_sd_ratio(small_cases: list[PhantomCase]) -> None:
    pixel_mm = np.asarray(phantom_pixel_size_mm(SMALL))
    difference = np.stack([c.annotations_px[0] - c.annotations_px[1] for c in small_cases]) * pixel_mm
    tangents = np.stack([contour_tangents_mm(7, index) for index in range(len(small_cases))])
    np.testing.assert_allclose(annotator_disagreement(small_cases, tuple(pixel_mm))["along_across_ratio"],
                               along_across_sd(difference, tangents).ratio, rtol=1e-9)
