"""Runs a P4-DPDK (SWX) pipeline spec in this process on DPDK's SWX engine, through ctypes."""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import attrs

from felix_p4.swx import spec as swx_spec

log = logging.getLogger(__name__)

_PACKAGE = Path(__file__).resolve().parent
_REPO = _PACKAGE.parents[1]


def _default_base() -> Path:
    """Where built and fetched files go by default: a source checkout's build/ (`make swx`),
    otherwise the user's cache, never inside an installed package."""
    if (_REPO / "Makefile").is_file() and (_REPO / "pyproject.toml").is_file():
        return _REPO / "build"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "felix-p4"


# Settings, by environment variable (felix_p4/swx/README.md, "Files and settings").
LIBRARY_ENV, INCLUDE_ENV, CACHE_ENV = (
    "FELIX_P4_SWX_LIB",
    "FELIX_P4_SWX_INCLUDE",
    "FELIX_P4_SWX_CACHE",
)
_BASE = _default_base()
# A prebuilt helper library; without one it is built from the packaged source into CACHE.
LIBRARY = Path(os.environ[LIBRARY_ENV]) if os.environ.get(LIBRARY_ENV) else None
INTERNAL_HEADERS = Path(os.environ.get(INCLUDE_ENV) or _BASE / "dpdk-internal")
CACHE = Path(os.environ.get(CACHE_ENV) or _BASE / "swx" / "cache")
HELPER_SOURCE = _PACKAGE / "felix_swx.c"
FETCH_HEADERS = _PACKAGE / "fetch-dpdk-headers.sh"
INSTALL_DPDK = _PACKAGE / "install-dpdk.sh"
_INTERNAL_HEADER_FILES = ("rte_swx_pipeline_internal.h", "rte_swx_pipeline_spec.h")
_HELPER_CFLAGS = (
    "-O2",
    "-g",
    "-Wall",
    "-Wextra",
    "-fPIC",
    "-shared",
    "-fvisibility=hidden",
    "-DALLOW_EXPERIMENTAL_API",
)

# Compiler flags for the C that DPDK generates from a spec (DPDK's examples/pipeline uses the
# same, at -O3; -O2 compiles faster and the generated code is straight-line anyway).
# -fno-strict-aliasing: DPDK's instruction functions write a checksum through a uint16_t
# pointer and read fields through uint64_t ones; with strict aliasing GCC -O2 may read the
# field before the checksum is written (docs/upstream-defects.md).
_CODEGEN_CFLAGS = (
    "-O2",
    "-fno-strict-aliasing",
    "-fPIC",
    "-shared",
    "-Wno-deprecated-declarations",
)
# felix_swx.c's wildcard table type (an ACL that may use DPDK's largest trie size; DPDK's own
# "wildcard" type gives up on rule sets needing more than 8 of its smallest tries).
WILDCARD_TYPE = "felix_wildcard"
_TABLE_BLOCK = re.compile(r"^table (\S+) \{\n(.*?^\}$)", re.M | re.S)
_ERR_LEN = 1024
_NAME_LEN = 64
# Upper bound for pushing one frame through: rx polls every input port round-robin and each
# table lookup yields to the next of SWX's 16 threads, so a frame takes a few hundred
# instructions; this bound only turns a broken pipeline into an error instead of a hang.
_MAX_INSTRUCTIONS = 1_000_000


class SwxUnavailable(Exception):
    """The engine cannot run here; str() is the one-line reason (for a test skip or a log)."""


class SwxError(Exception):
    """An engine operation failed; str() is the reason, with DPDK's error where it gave one."""


@attrs.frozen(slots=True)
class PortStats:
    rx_packets: int
    rx_bytes: int
    tx_packets: int
    tx_bytes: int
    tx_dropped: int  # packets the port discarded (all of them, for the drop port)


@attrs.frozen(slots=True)
class TableStats:
    hits: int
    misses: int
    actions: dict[str, int]  # packets per action of the table (hit or default)


@attrs.frozen(slots=True)
class LearnerStats:
    hits: int
    misses: int
    learned: int
    learn_failed: int
    rearmed: int
    forgotten: int
    actions: dict[str, int]


_KIND_TABLE, _KIND_SELECTOR, _KIND_LEARNER = 0, 1, 2
_KIND_NAMES = {_KIND_TABLE: "table", _KIND_SELECTOR: "selector", _KIND_LEARNER: "learner"}
_ENTRY_ADD, _ENTRY_DELETE, _ENTRY_DEFAULT = 0, 1, 2

_lib: ctypes.CDLL | None = None
_eal_memory_mb: int | None = None


def _bind(lib: ctypes.CDLL) -> None:
    c = ctypes
    p, s, u32, u64, i = c.c_void_p, c.c_char_p, c.c_uint32, c.c_uint64, c.c_int
    err = (c.c_char_p, c.c_size_t)
    sigs: dict[str, tuple[object, tuple[object, ...]]] = {
        "fsx_dpdk_version": (s, ()),
        "fsx_eal_init": (i, (s, *err)),
        "fsx_tsc_hz": (u64, ()),
        "fsx_codegen": (i, (s, s, *err)),
        "fsx_pipeline_build": (p, (s, c.POINTER(i), u32, u32, u32, u32, *err)),
        "fsx_pipeline_free": (None, (p,)),
        "fsx_counts": (i, (p, c.POINTER(u32))),
        "fsx_action_name": (i, (p, u32, s, c.c_size_t)),
        "fsx_object_info": (
            i,
            (p, i, u32, s, c.c_size_t, c.POINTER(u32), u32, c.POINTER(u32)),
        ),
        "fsx_table_entry": (i, (p, i, s, s, i, *err)),
        "fsx_learner_default": (i, (p, s, s, i, *err)),
        "fsx_selector_members_max": (u32, (p, u32)),
        "fsx_selector_group_add": (i, (p, s, c.POINTER(u32), *err)),
        "fsx_selector_group_delete": (i, (p, s, u32, *err)),
        "fsx_selector_member": (i, (p, s, u32, u32, u32, *err)),
        "fsx_commit": (i, (p, *err)),
        "fsx_abort": (None, (p,)),
        "fsx_run": (None, (p, u32)),
        "fsx_run_until": (i, (p, u32, u64, u64, u64, *err)),
        "fsx_run_until_idle": (i, (p, u64)),
        "fsx_run_burst": (i, (p, u64, u64, u32, u64, *err)),
        "fsx_port_stats": (i, (p, u32, c.POINTER(u64))),
        "fsx_out_pkts_total": (u64, (p,)),
        "fsx_table_stats": (i, (p, s, c.POINTER(u64), c.POINTER(u64), *err)),
        "fsx_learner_stats": (i, (p, s, c.POINTER(u64), c.POINTER(u64), *err)),
        "fsx_selector_stats": (i, (p, s, c.POINTER(u64), *err)),
        "fsx_learner_timeout": (i, (p, s, u32, c.POINTER(u32), *err)),
        "fsx_learner_timeout_set": (i, (p, s, u32, u32, *err)),
    }
    for name, (restype, argtypes) in sigs.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes


def _library() -> ctypes.CDLL:
    """The helper library, loaded once; SwxUnavailable says what is missing."""
    global _lib
    if _lib is not None:
        return _lib
    path = helper_library()
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as exc:
        where = LIBRARY_ENV if LIBRARY is not None else f"built in {CACHE_ENV}"
        raise SwxUnavailable(f"cannot load {path} ({where}): {exc}") from exc
    _bind(lib)
    _lib = lib
    return lib


def helper_library() -> Path:
    """The helper library: ${FELIX_P4_SWX_LIB} when set, otherwise built on first use from the
    packaged felix_swx.c into CACHE, named by the hash of source, DPDK, its internal headers
    and flags (a new version of either builds a new one). It is compiled against the internal
    headers too, so they are checked first. SwxUnavailable says what is missing."""
    if LIBRARY is not None:
        if not LIBRARY.exists():
            raise SwxUnavailable(
                f"SWX engine library {LIBRARY} ({LIBRARY_ENV}) does not exist: build it there or"
                f" unset {LIBRARY_ENV} to have the engine build it into {CACHE} ({CACHE_ENV})"
            )
        return LIBRARY
    if not HELPER_SOURCE.exists():
        raise SwxUnavailable(
            f"SWX engine source {HELPER_SOURCE} is missing from the package: reinstall"
            f" felix-p4, or set {LIBRARY_ENV} to a built libfelix_swx.so"
        )
    compiler = _compiler(f"build the SWX engine library into {CACHE} ({CACHE_ENV})")
    _check_internal_headers(" ".join(["DPDK", *_pkg_config("--modversion")]))
    flags = [*_HELPER_CFLAGS, f"-I{INTERNAL_HEADERS}", *_pkg_config("--cflags")]
    libs = _pkg_config("--libs")
    key = _cache_key(HELPER_SOURCE.read_bytes(), compiler, flags, libs)
    target = CACHE / f"libfelix_swx-{key}.so"
    if target.exists():
        return target
    try:
        CACHE.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
            obj = Path(tmp) / "libfelix_swx.so"
            failed, warnings = _compile(compiler, flags, obj, HELPER_SOURCE, libs)
            if failed is not None:
                raise SwxUnavailable(
                    f"building the SWX engine library from {HELPER_SOURCE} failed:"
                    f" {failed}; or set {LIBRARY_ENV} to a built libfelix_swx.so"
                )
            if warnings:
                log.warning("building %s: %s", target.name, " | ".join(warnings))
            os.replace(obj, target)
    except OSError as exc:
        raise SwxUnavailable(
            f"cannot build the SWX engine library in {CACHE}: {exc}; set {CACHE_ENV} to a"
            f" writable directory or {LIBRARY_ENV} to a built libfelix_swx.so"
        ) from exc
    log.info("built the SWX engine library %s", target)
    return target


def _cache_key(source: bytes, compiler: str, flags: Sequence[str], libs: Sequence[str]) -> str:
    """The name a compiled library is cached under: a digest of its source, the DPDK internal
    header it depends on and the command line that built it."""
    key = hashlib.sha256()
    for part in (
        source,
        (INTERNAL_HEADERS / _INTERNAL_HEADER_FILES[0]).read_bytes(),
        " ".join([compiler, *flags, *libs]).encode(),
    ):
        key.update(part)
        key.update(b"\0")
    return key.hexdigest()[:20]


def _compile(
    compiler: str, flags: Sequence[str], out: Path, source: Path, libs: Sequence[str]
) -> tuple[str | None, list[str]]:
    """Compile `source` into the shared object `out`: (the first error line, or None when it
    built; the compiler's other output lines)."""
    result = subprocess.run(
        [compiler, *flags, "-o", str(out), str(source), *libs],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = result.stderr.splitlines()
    if result.returncode:
        return next((ln for ln in lines if "error" in ln), "").strip(), lines
    return None, [ln for ln in lines if ln.strip()]


def _compiler(purpose: str) -> str:
    compiler = os.environ.get("CC", "gcc")
    if shutil.which(compiler) is None:
        raise SwxUnavailable(
            f"no C compiler ({compiler}; set CC) to {purpose}: install gcc"
            f" (as root on Debian 12: {INSTALL_DPDK})"
        )
    return compiler


def _has_dpdk() -> bool:
    return subprocess.run(["pkg-config", "--exists", "libdpdk"], check=False).returncode == 0


def _pkg_config(what: str) -> list[str]:
    if shutil.which("pkg-config") is None or not _has_dpdk():
        raise SwxUnavailable(
            "DPDK development files (pkg-config libdpdk) are not installed: as root on"
            f" Debian 12 run {INSTALL_DPDK} (dpdk-dev libdpdk-dev dpkg-dev gcc pkg-config"
            " xz-utils, and deb-src entries)"
        )
    out = subprocess.run(
        ["pkg-config", what, "libdpdk"], capture_output=True, text=True, check=True
    )
    return out.stdout.split()


def _check_internal_headers(dpdk_version: str) -> None:
    """SwxUnavailable unless INTERNAL_HEADERS holds both headers of this DPDK ("DPDK 22.11.11":
    its VERSION file names one of the words)."""
    for header in _INTERNAL_HEADER_FILES:
        if not (INTERNAL_HEADERS / header).exists():
            raise SwxUnavailable(
                f"DPDK internal header {INTERNAL_HEADERS / header} ({INCLUDE_ENV}) is missing"
                f" (libdpdk-dev does not ship it): {_fetch_headers_hint(dpdk_version)}"
            )
    stamp = INTERNAL_HEADERS / "VERSION"
    if not stamp.exists() or stamp.read_text().strip() not in dpdk_version.split():
        raise SwxUnavailable(
            f"DPDK internal headers in {INTERNAL_HEADERS} ({INCLUDE_ENV}) do not match the"
            f" installed {dpdk_version}: {_fetch_headers_hint(dpdk_version)}"
        )


def _fetch_headers_hint(version: str) -> str:
    return (
        f"run `bash {FETCH_HEADERS} {INTERNAL_HEADERS}` (it takes them from Debian's source"
        f" package of the installed libdpdk-dev: needs deb-src entries, dpkg-dev and xz-utils,"
        f" which {INSTALL_DPDK} sets up as root), or set {INCLUDE_ENV} to a directory holding"
        f" {' and '.join(_INTERNAL_HEADER_FILES)} of {version} and a VERSION file"
        f" naming it"
    )


def availability() -> str | None:
    """Why the engine cannot run here, or None when it can (checks files, builds the helper
    library on first use, starts nothing)."""
    try:
        _library()
        _codegen_inputs()
    except SwxUnavailable as exc:
        return str(exc)
    return None


def _codegen_inputs() -> tuple[str, list[str], list[str]]:
    """Compiler, flags and libraries for generated pipeline C; SwxUnavailable if one is missing.

    The library links DPDK itself: DPDK dlopens it, and the helper library's DPDK symbols are
    not global (ctypes loads it RTLD_LOCAL).
    """
    compiler = _compiler(f"build pipeline libraries into {CACHE} ({CACHE_ENV})")
    _check_internal_headers(_library().fsx_dpdk_version().decode())
    cflags = [*_CODEGEN_CFLAGS, f"-I{INTERNAL_HEADERS}", *_pkg_config("--cflags")]
    return compiler, cflags, _pkg_config("--libs")


def _err() -> ctypes.Array[ctypes.c_char]:
    return ctypes.create_string_buffer(_ERR_LEN)


def _check(status: int, err: ctypes.Array[ctypes.c_char]) -> None:
    if status:
        raise SwxError(err.value.decode(errors="replace") or os.strerror(-status))


def init_eal(memory_mb: int, *, log_level: str = "error", extra_args: tuple[str, ...] = ()) -> None:
    """Start DPDK's EAL for this process: no hugepages, PCI, shared files or root needed.

    DPDK allows one EAL per process and cannot resize or restart it, so the first call fixes the
    memory size (tables, selectors, learners and packet buffers all come out of it); later calls
    are no-ops when they ask for no more memory and an error otherwise.
    """
    global _eal_memory_mb
    if _eal_memory_mb is not None:
        if memory_mb > _eal_memory_mb:
            raise SwxError(
                f"the EAL already runs with {_eal_memory_mb} MB in this process and DPDK cannot"
                f" resize it; {memory_mb} MB asked"
            )
        return
    lib = _library()
    # The EAL pins its main lcore; take a CPU this process may run on (the C layer restores
    # the process's affinity afterwards).
    args = [
        "-l",
        str(min(os.sched_getaffinity(0))),
        "--no-huge",
        "--no-pci",
        "--no-shconf",
        "--no-telemetry",
        "-m",
        str(memory_mb),
        f"--log-level={log_level}",
        *extra_args,
    ]
    err = _err()
    _check(lib.fsx_eal_init(" ".join(args).encode(), err, _ERR_LEN), err)
    _eal_memory_mb = memory_mb
    log.info("DPDK EAL started (%s, %d MB)", lib.fsx_dpdk_version().decode(), memory_mb)


def tsc_hz() -> int:
    """The TSC frequency DPDK measured (learner timeouts count TSC cycles); 0 before the EAL."""
    return int(_library().fsx_tsc_hz()) if _eal_memory_mb is not None else 0


def with_table_type(text: str, type_name: str = WILDCARD_TYPE) -> str:
    """The spec with `instanceof type_name` in every table SWX stores as a wildcard table and
    that names no type itself. A spec this module cannot read is returned as it is: DPDK's
    codegen then says what is wrong with it, with the line."""
    try:
        spec = swx_spec.parse(text)
        wildcard = {name for name, table in spec.tables.items() if spec.is_wildcard(table)}
    except (swx_spec.SpecError, KeyError):
        return text

    def add_type(block: re.Match[str]) -> str:
        if block.group(1) not in wildcard or re.search(r"^\s*instanceof\s", block.group(2), re.M):
            return block.group(0)
        return f"table {block.group(1)} {{\n\tinstanceof {type_name}\n{block.group(2)}"

    return _TABLE_BLOCK.sub(add_type, text)


def build_library(
    spec_path: Path, cache_dir: Path = CACHE, *, wildcard_type: str | None = WILDCARD_TYPE
) -> Path:
    """Spec -> C (DPDK codegen) -> shared object, cached by the hash of spec and toolchain.

    Wildcard tables get the table type `wildcard_type` (with_table_type); None leaves the spec
    as it is, so they get DPDK's own (the reproductions of DPDK's behaviour need that).
    """
    lib = _library()
    compiler, cflags, libs = _codegen_inputs()
    text = spec_path.read_text()
    if wildcard_type is not None:
        text = with_table_type(text, wildcard_type)
    spec = text.encode()
    key = _cache_key(spec + b"\0" + lib.fsx_dpdk_version(), compiler, cflags, libs)
    target = cache_dir / f"{spec_path.stem}-{key}.so"
    if target.exists():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        source = Path(tmp) / spec_path.name
        code, obj = Path(tmp) / "pipeline.c", Path(tmp) / "pipeline.so"
        source.write_bytes(spec)
        err = _err()
        if lib.fsx_codegen(str(source).encode(), str(code).encode(), err, _ERR_LEN):
            # Report it against the caller's file and its line numbers where that fails too.
            own = _err()
            _check(lib.fsx_codegen(str(spec_path).encode(), str(code).encode(), own, _ERR_LEN), own)
            raise SwxError(err.value.decode(errors="replace"))
        failed, _ = _compile(compiler, cflags, obj, code, libs)
        if failed is not None:
            raise SwxError(f"compiling the C generated from {spec_path} failed: {failed}")
        os.replace(obj, target)
    log.info("built SWX pipeline library %s", target)
    return target


def _weight_slots(weights: list[int]) -> int:
    """Group slots DPDK 22.11 gives these weights: each divisor from 2 to the smallest weight
    divides all of them once where it can (rte_swx_table_selector.c), then they are summed."""
    reduced = list(weights)
    for divisor in range(2, min(reduced) + 1):
        if all(w % divisor == 0 for w in reduced):
            reduced = [w // divisor for w in reduced]
    return sum(reduced)


@attrs.define
class _SelectorGroups:
    """One selector's groups, committed and staged: group id -> member id -> weight."""

    slots: int  # n_members_per_group_max
    committed: dict[int, dict[int, int]] = attrs.Factory(dict)
    staged: dict[int, dict[int, int]] = attrs.Factory(dict)


class SwxPipeline:
    """One SWX pipeline with fd ports 0..n_ports-1, its control plane and its counters.

    Ports without a caller-supplied fd get a datagram socketpair: the engine owns one end and
    `process` injects and collects frames on the other. An output to port `n_ports` (SWX's
    `drop` target) is a drop. Not thread-safe: use one pipeline from one thread.
    """

    def __init__(
        self,
        handle: int,
        lib: ctypes.CDLL,
        n_ports: int,
        test_ports: dict[int, socket.socket],
        engine_ends: list[socket.socket],
    ) -> None:
        self._handle: int | None = handle
        self._lib = lib
        self.n_ports = n_ports
        self._test_ports = test_ports
        self._engine_ends = engine_ends
        counts = (ctypes.c_uint32 * 6)()
        lib.fsx_counts(handle, counts)
        n_actions, n_tables, n_selectors, n_learners = counts[0], counts[1], counts[2], counts[3]
        self._action_names = [self._action_name(a) for a in range(n_actions)]
        self._actions_of: dict[tuple[int, str], list[int]] = {}
        self._selectors: dict[str, _SelectorGroups] = {}
        for kind, n in (
            (_KIND_TABLE, n_tables),
            (_KIND_SELECTOR, n_selectors),
            (_KIND_LEARNER, n_learners),
        ):
            for obj in range(n):
                name, ids = self._object_info(kind, obj)
                self._actions_of[(kind, name)] = ids
                if kind == _KIND_SELECTOR:
                    slots = int(lib.fsx_selector_members_max(handle, obj))
                    self._selectors[name] = _SelectorGroups(slots)
        self._staged: list[tuple[tuple[int, str], str, tuple[object, ...]]] = []

    @classmethod
    def load(
        cls,
        spec_path: Path | str,
        n_ports: int,
        memory_mb: int = 256,
        *,
        port_fds: Mapping[int, int] | None = None,
        mtu: int = 2048,
        burst: int = 32,
        n_mbufs: int = 4096,
        cache_dir: Path = CACHE,
        wildcard_type: str | None = WILDCARD_TYPE,
    ) -> SwxPipeline:
        """Compile (cached) and start `spec_path` with P4 ports 0..n_ports-1.

        port_fds maps a port to a caller-owned, non-blocking fd (AF_PACKET socket, TAP fd) used
        for both directions; the other ports get socketpairs for `process`. memory_mb sizes the
        process's EAL on first use (see init_eal). Frames longer than mtu are cut to mtu.
        Wildcard tables use the table type `wildcard_type` (build_library).
        """
        if n_ports < 1:
            raise SwxError("a pipeline needs at least one port")
        lib = _library()
        so = build_library(Path(spec_path), cache_dir, wildcard_type=wildcard_type)
        init_eal(memory_mb)
        fds: list[int] = []
        test_ports: dict[int, socket.socket] = {}
        engine_ends: list[socket.socket] = []
        for port in range(n_ports):
            if port_fds is not None and port in port_fds:
                fds.append(port_fds[port])
                continue
            engine, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
            engine.setblocking(False)
            peer.setblocking(False)
            for sock in (engine, peer):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            engine_ends.append(engine)
            test_ports[port] = peer
            fds.append(engine.fileno())
        err = _err()
        fd_array = (ctypes.c_int * n_ports)(*fds)
        handle = lib.fsx_pipeline_build(
            str(so).encode(), fd_array, n_ports, mtu, burst, n_mbufs, err, _ERR_LEN
        )
        if not handle:
            for sock in (*engine_ends, *test_ports.values()):
                sock.close()
            raise SwxError(err.value.decode(errors="replace"))
        return cls(handle, lib, n_ports, test_ports, engine_ends)

    # -- housekeeping -------------------------------------------------------------------------

    def _action_name(self, action: int) -> str:
        buf = ctypes.create_string_buffer(_NAME_LEN)
        if self._lib.fsx_action_name(self._ptr, action, buf, _NAME_LEN):
            raise SwxError(f"cannot read the name of action {action}")
        return buf.value.decode()

    def _object_info(self, kind: int, obj: int) -> tuple[str, list[int]]:
        buf = ctypes.create_string_buffer(_NAME_LEN)
        ids = (ctypes.c_uint32 * 256)()
        n = ctypes.c_uint32()
        status = self._lib.fsx_object_info(
            self._ptr, kind, obj, buf, _NAME_LEN, ids, 256, ctypes.byref(n)
        )
        if status:
            raise SwxError(f"cannot read pipeline object {obj}: {os.strerror(-status)}")
        return buf.value.decode(), list(ids[: n.value])

    @property
    def _ptr(self) -> int:
        if self._handle is None:
            raise SwxError("the pipeline was closed")
        return self._handle

    def close(self) -> None:
        """Free the pipeline and its socketpairs (the EAL stays up for the process)."""
        if self._handle is None:
            return
        self._lib.fsx_pipeline_free(self._handle)
        self._handle = None
        for sock in (*self._engine_ends, *self._test_ports.values()):
            sock.close()

    def __enter__(self) -> SwxPipeline:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _call(self, fn_name: str, *args: object) -> None:
        err = _err()
        _check(getattr(self._lib, fn_name)(self._ptr, *args, err, _ERR_LEN), err)

    # -- control plane: staged until commit() -------------------------------------------------
    # Changes are checked when staged and applied by commit() one table/selector/learner at a
    # time: DPDK 22.11 can only roll back a failed commit that touched a single object.

    def _stage(self, kind: int, name: str, fn_name: str, *args: object) -> None:
        if (kind, name) not in self._actions_of:
            raise SwxError(f"no {_KIND_NAMES[kind]} named {name}")
        self._staged.append(((kind, name), fn_name, args))

    def _stage_entry(self, op: int, table: str, entry: str) -> None:
        args = (op, table.encode(), entry.encode())
        self._call("fsx_table_entry", *args, 1)  # validate now, stage at commit
        self._stage(_KIND_TABLE, table, "fsx_table_entry", *args, 0)

    def table_add(self, table: str, entry: str) -> None:
        """Stage an entry, `match <v>[/<mask>] ... [priority <p>] action <a> [<arg> <v> ...]`.

        An entry whose key (value and mask; not priority) is already in the table replaces it.
        """
        self._stage_entry(_ENTRY_ADD, table, entry)

    def table_delete(self, table: str, entry: str) -> None:
        """Stage deleting the entry with this match (`match ...`); an absent key is a no-op."""
        self._stage_entry(_ENTRY_DELETE, table, entry)

    def default_entry(self, table: str, entry: str) -> None:
        """Stage a table's or learner's default action, `action <a> [<arg> <v> ...]`."""
        if (_KIND_LEARNER, table) not in self._actions_of:
            self._stage_entry(_ENTRY_DEFAULT, table, entry)
            return
        self._call("fsx_learner_default", table.encode(), entry.encode(), 1)
        self._stage(_KIND_LEARNER, table, "fsx_learner_default", table.encode(), entry.encode(), 0)

    def selector_group_add(self, selector: str) -> int:
        """Allocate an empty group and return its id (DPDK picks the lowest free one).

        Not staged: the id stays allocated whatever commit() or abort() do; delete the group
        to release it.
        """
        groups = self._selector(selector)
        group = ctypes.c_uint32()
        self._call("fsx_selector_group_add", selector.encode(), ctypes.byref(group))
        groups.committed[group.value] = {}
        groups.staged[group.value] = {}
        return group.value

    def selector_group_delete(self, selector: str, group: int) -> None:
        self._staged_group(selector, group)
        del self._selectors[selector].staged[group]
        self._stage(_KIND_SELECTOR, selector, "fsx_selector_group_delete", selector.encode(), group)

    def selector_group_member_add(
        self, selector: str, group: int, member: int, weight: int = 1
    ) -> None:
        """Stage a member (or a new weight for it).

        Member ids must be < n_members_per_group_max, and the group's weights, reduced as DPDK
        reduces them, must fit its n_members_per_group_max slots.
        """
        members = dict(self._staged_group(selector, group))
        slots = self._selectors[selector].slots
        if not 0 <= member < slots:
            raise SwxError(
                f"selector {selector}: member id {member} out of range"
                f" (ids must be < n_members_per_group_max {slots})"
            )
        if weight < 1:
            raise SwxError("a selector member's weight must be at least 1")
        members[member] = weight
        if _weight_slots(list(members.values())) > slots:
            raise SwxError(
                f"selector {selector}: group {group} weights {sorted(members.values())} need"
                f" more than its {slots} slots"
            )
        self._selectors[selector].staged[group] = members
        self._stage(
            _KIND_SELECTOR,
            selector,
            "fsx_selector_member",
            selector.encode(),
            group,
            member,
            weight,
        )

    def selector_group_member_delete(self, selector: str, group: int, member: int) -> None:
        members = self._staged_group(selector, group)
        if member not in members:
            raise SwxError(f"selector {selector}: group {group} has no member {member}")
        self._selectors[selector].staged[group] = {m: w for m, w in members.items() if m != member}
        self._stage(
            _KIND_SELECTOR, selector, "fsx_selector_member", selector.encode(), group, member, 0
        )

    def _selector(self, selector: str) -> _SelectorGroups:
        groups = self._selectors.get(selector)
        if groups is None:
            raise SwxError(f"no selector named {selector}")
        return groups

    def _staged_group(self, selector: str, group: int) -> dict[int, int]:
        members = self._selector(selector).staged.get(group)
        if members is None:
            raise SwxError(f"selector {selector}: no group {group}")
        return members

    def commit(self) -> None:
        """Apply the staged changes, each table/selector/learner's atomically, in staging order.

        If one object's changes fail, those before it stay applied and its own and all later
        ones are dropped; the error names which is which.
        """
        staged, self._staged = self._staged, []
        by_object: dict[tuple[int, str], list[tuple[str, tuple[object, ...]]]] = {}
        for obj, fn_name, args in staged:
            by_object.setdefault(obj, []).append((fn_name, args))
        applied: list[str] = []
        for position, (obj, ops) in enumerate(by_object.items()):
            try:
                for fn_name, args in ops:
                    self._call(fn_name, *args)
                self._call("fsx_commit")
            except SwxError as exc:
                self._lib.fsx_abort(self._ptr)
                self.abort()
                dropped = [f"{_KIND_NAMES[k]} {n}" for k, n in list(by_object)[position:]]
                raise SwxError(
                    f"{exc} (applied: {', '.join(applied) or 'nothing'};"
                    f" dropped: {', '.join(dropped)})"
                ) from None
            if obj[0] == _KIND_SELECTOR:
                groups = self._selectors[obj[1]]
                groups.committed = {g: dict(m) for g, m in groups.staged.items()}
            applied.append(f"{_KIND_NAMES[obj[0]]} {obj[1]}")

    def abort(self) -> None:
        """Drop every staged change."""
        self._staged = []
        for groups in self._selectors.values():
            groups.staged = {g: dict(m) for g, m in groups.committed.items()}

    # -- data plane ---------------------------------------------------------------------------

    def run(self, n_instructions: int) -> None:
        """Execute pipeline instructions (polling every input port), then flush the outputs."""
        self._lib.fsx_run(self._ptr, n_instructions)

    def run_until_idle(self, max_instructions: int) -> bool:
        """Move the frames waiting on the ports' fds through the pipeline. True when it is idle
        (every frame read has left and the ports had nothing more), False when
        `max_instructions` ran out first: call again."""
        return bool(self._lib.fsx_run_until_idle(self._ptr, max_instructions))

    def process(self, in_port: int, frame: bytes) -> list[tuple[int, bytes]]:
        """Send one frame into `in_port` and return what left on which port, by port.

        An empty list means the pipeline dropped it. in_port and the outputs seen are the
        socketpair ports (those not given in `port_fds`).
        """
        peer = self._test_ports.get(in_port)
        if peer is None:
            raise SwxError(f"port {in_port} is not a test port of this pipeline")
        in_before = self.port_stats(in_port).rx_packets
        out_before = int(self._lib.fsx_out_pkts_total(self._ptr))
        peer.send(frame)
        err = _err()
        status = self._lib.fsx_run_until(
            self._ptr, in_port, in_before + 1, out_before + 1, _MAX_INSTRUCTIONS, err, _ERR_LEN
        )
        _check(status, err)
        if len(self._test_ports) < self.n_ports:
            # Frames from caller-owned fds may have been in the pipeline too and ended the
            # wait early: let everything in flight leave.
            self._lib.fsx_run_until_idle(self._ptr, _MAX_INSTRUCTIONS)
        return self.received()

    def send(self, in_port: int, frames: Sequence[bytes]) -> None:
        """Queue frames on `in_port`'s wire (its test socket) without running the pipeline;
        `run_burst` pushes them through. The socket holds about a thousand small frames."""
        peer = self._test_ports.get(in_port)
        if peer is None:
            raise SwxError(f"port {in_port} is not a test port of this pipeline")
        for frame in frames:
            try:
                peer.send(frame)
            except BlockingIOError:
                raise SwxError(f"port {in_port}'s socket is full: send fewer frames") from None

    def run_burst(self, n_frames: int, chunk: int = 256) -> None:
        """Run until the `n_frames` frames queued by `send` have been read and have all left
        (a port or the drop port), reading the counters every `chunk` instructions."""
        in_before = sum(self.port_stats(p).rx_packets for p in self._test_ports)
        out_before = int(self._lib.fsx_out_pkts_total(self._ptr))
        err = _err()
        limit = _MAX_INSTRUCTIONS * max(1, n_frames)
        status = self._lib.fsx_run_burst(
            self._ptr, in_before + n_frames, out_before + n_frames, chunk, limit, err, _ERR_LEN
        )
        _check(status, err)

    def received(self) -> list[tuple[int, bytes]]:
        """Every frame that left on a test port since the last call, by port."""
        outputs = []
        for port, sock in sorted(self._test_ports.items()):
            while True:
                try:
                    outputs.append((port, sock.recv(65536)))
                except BlockingIOError:
                    break
        return outputs

    # -- counters -----------------------------------------------------------------------------

    def port_stats(self, port: int) -> PortStats:
        """Counters of port 0..n_ports-1, or of the drop port `n_ports` (tx side only)."""
        out = (ctypes.c_uint64 * 5)()
        status = self._lib.fsx_port_stats(self._ptr, port, out)
        if status:
            raise SwxError(f"no port {port} (ports 0..{self.n_ports - 1}, drop {self.n_ports})")
        return PortStats(*(int(v) for v in out))

    @property
    def dropped(self) -> int:
        """Packets sent to the drop port so far."""
        return self.port_stats(self.n_ports).tx_dropped

    def _per_action(
        self, kind: int, name: str, counts: ctypes.Array[ctypes.c_uint64]
    ) -> dict[str, int]:
        return {self._action_names[a]: int(counts[a]) for a in self._actions_of[(kind, name)]}

    def table_stats(self, table: str) -> TableStats:
        out = (ctypes.c_uint64 * 2)()
        per_action = (ctypes.c_uint64 * max(1, len(self._action_names)))()
        self._call("fsx_table_stats", table.encode(), out, per_action)
        return TableStats(
            int(out[0]), int(out[1]), self._per_action(_KIND_TABLE, table, per_action)
        )

    def learner_stats(self, learner: str) -> LearnerStats:
        out = (ctypes.c_uint64 * 6)()
        per_action = (ctypes.c_uint64 * max(1, len(self._action_names)))()
        self._call("fsx_learner_stats", learner.encode(), out, per_action)
        return LearnerStats(
            hits=int(out[0]),
            misses=int(out[1]),
            learned=int(out[2]),
            learn_failed=int(out[3]),
            rearmed=int(out[4]),
            forgotten=int(out[5]),
            actions=self._per_action(_KIND_LEARNER, learner, per_action),
        )

    def selector_stats(self, selector: str) -> int:
        """Packets that went through the selector."""
        n = ctypes.c_uint64()
        self._call("fsx_selector_stats", selector.encode(), ctypes.byref(n))
        return n.value

    def learner_timeout_seconds(self, learner: str, timeout_id: int) -> int:
        seconds = ctypes.c_uint32()
        self._call("fsx_learner_timeout", learner.encode(), timeout_id, ctypes.byref(seconds))
        return seconds.value

    def set_learner_timeout(self, learner: str, timeout_id: int, seconds: int) -> None:
        """Change one of a learner's timeouts now (not staged); entries learned before keep
        theirs. DPDK 22.11's rte_swx_ctl_pipeline_learner_timeout_set."""
        if not 0 < seconds < 1 << 32:
            raise SwxError(f"learner {learner}: timeout {seconds} s is not in 1..2^32-1")
        self._call("fsx_learner_timeout_set", learner.encode(), timeout_id, seconds)
