"""Where the P4-DPDK engine cannot run it says, in one line, why and which setting or command
fixes it: a prebuilt library that is not there, no DPDK, missing internal headers."""

import pytest

from felix_p4.swx import SwxPipeline, SwxUnavailable, availability, engine


def _needs_dpdk() -> None:
    try:
        engine._pkg_config("--modversion")
    except SwxUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture
def no_library(monkeypatch, tmp_path):
    monkeypatch.setattr(engine, "LIBRARY", tmp_path / "libfelix_swx.so")
    monkeypatch.setattr(engine, "_lib", None)


def test_a_missing_prebuilt_library_is_reported_with_its_setting(no_library, tmp_path):
    reason = availability()

    assert reason is not None
    assert f"{tmp_path / 'libfelix_swx.so'} (FELIX_P4_SWX_LIB) does not exist" in reason
    assert "FELIX_P4_SWX_CACHE" in reason
    assert "\n" not in reason


def test_loading_without_the_library_raises_the_same_reason(no_library, tmp_path):
    with pytest.raises(SwxUnavailable, match="does not exist"):
        SwxPipeline.load(tmp_path / "any.spec", 1)


def test_without_dpdk_the_reason_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(engine, "LIBRARY", None)
    monkeypatch.setattr(engine, "CACHE", tmp_path / "cache")
    monkeypatch.setattr(engine, "_lib", None)
    monkeypatch.setenv("PKG_CONFIG_PATH", str(tmp_path))
    monkeypatch.setenv("PKG_CONFIG_LIBDIR", str(tmp_path))  # pkg-config finds no libdpdk

    reason = availability()

    assert reason is not None
    assert "pkg-config libdpdk" in reason and str(engine.INSTALL_DPDK) in reason
    assert "libdpdk-dev" in reason
    assert not (tmp_path / "cache").exists()


def test_the_library_is_built_on_first_use_into_the_cache(monkeypatch, tmp_path):
    _needs_dpdk()
    monkeypatch.setattr(engine, "LIBRARY", None)
    monkeypatch.setattr(engine, "CACHE", tmp_path / "cache")

    built = engine.helper_library()

    assert built.parent == tmp_path / "cache" and built.name.startswith("libfelix_swx-")
    assert engine.helper_library() == built  # cached: the same file, not rebuilt


def test_missing_internal_headers_name_the_fetch_command_and_the_setting(monkeypatch, tmp_path):
    _needs_dpdk()
    headers = tmp_path / "dpdk-internal"
    monkeypatch.setattr(engine, "INTERNAL_HEADERS", headers)

    reason = availability()

    assert reason is not None and "\n" not in reason
    assert f"{headers / 'rte_swx_pipeline_internal.h'} (FELIX_P4_SWX_INCLUDE) is missing" in reason
    assert f"run `bash {engine.FETCH_HEADERS} {headers}`" in reason
    assert "deb-src" in reason and str(engine.INSTALL_DPDK) in reason
