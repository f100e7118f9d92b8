"""Safe extraction of one image layer (a plain, gzip or zstd tar) into a directory used as an overlay lowerdir.

Theory of operation. A layer comes from someone else, so every entry is checked before anything is
written, and nothing is ever written *through* a symlink:

- names are cleaned ("./a//b" -> "a/b"); an absolute name or a ".." component is refused;
- every parent directory of an entry must be a real directory of this layer (made if missing); a
  parent that is a symlink or a file is refused, whatever it points to;
- symlinks are created with their target text as it is (an absolute target is normal in an image: it
  resolves inside the container's root at run time, never here);
- a hardlink's target must be a clean relative name of an entry already in this layer, reached through
  real directories only; `link()` never follows a final symlink;
- character and block devices are refused (an image has no business shipping device nodes; the OCI
  runtime makes /dev); fifos are fine;
- OCI whiteouts (image-spec layer.md "Whiteouts") become overlayfs objects: `.wh.NAME` -> a 0/0
  character device NAME, `.wh..wh..opq` -> xattr `trusted.overlay.opaque=y` on its directory. Whiteouts
  only hide lower layers, so an entry of the same name in this layer wins. Other `.wh..wh.` entries
  (aufs metadata) are ignored, and `trusted.*` xattrs from the archive are never applied (a layer
  must not forge overlay metadata such as redirects).

Numeric uid/gid, modes (setuid included: chown comes before chmod), xattrs and mtimes are preserved;
directory attributes are applied last, once nothing more is written into them. The sha256 of the blob
(`digest`) and of the uncompressed tar (`diff_id`) are computed in the same single pass.

Extraction goes into a temp directory beside `dest`, which is renamed onto `dest` only when the whole
archive was applied and both digests match what the caller expected; on any failure the temp
directory is removed, so a refused layer leaves nothing behind.

This module never decides where layers live nor which layers an image has (that is `store`).
Python's tarfile 'data' filter is deliberately not used: it refuses legitimate absolute symlinks.
"""

from __future__ import annotations

import errno
import hashlib
import io
import logging
import os
import secrets
import shutil
import stat
import tarfile
import zlib
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

from isal import igzip, isal_zlib  # ISA-L's inflate: about twice zlib's speed, a drop-in GzipFile

from podhost.errors import InvalidArgument, PodhostError, RuntimeFailure

log = logging.getLogger(__name__)

WHITEOUT_PREFIX = ".wh."
WHITEOUT_META_PREFIX = ".wh..wh."
OPAQUE_WHITEOUT = ".wh..wh..opq"
OVERLAY_OPAQUE_XATTR = "trusted.overlay.opaque"
MEDIA_TYPE_TAR = "application/vnd.oci.image.layer.v1.tar"
MEDIA_TYPE_TAR_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_TYPE_TAR_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

_CHUNK = 1 << 20
#: tarfile's stream buffer. Its stream reader copies what is left of the buffer at every read (each
#: 512-byte header included), so 1 MiB made that copying 40 % of an unpack; at 16 KiB it is noise.
_TAR_BUFSIZE = 16 << 10


def _umask() -> int:
    """The process's umask, read without changing it (os.umask would, for every thread)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o7777  # unknown: always fchmod


_UMASK = _umask()
#: Who owns a file this process creates.
_CREATOR = (os.geteuid(), os.getegid())
_PAX_XATTR = "SCHILY.xattr."
#: errnos that say the host is in trouble, not the archive.
_HOST_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.ENOMEM}

LayerSource = Path | bytes | IO[bytes]


@dataclass(frozen=True)
class LayerInfo:
    digest: str  # sha256 of the blob as given (compressed when it is)
    diff_id: str  # sha256 of the uncompressed tar (OCI config rootfs.diff_ids)
    size: int  # bytes of regular-file content
    media_type: str  # tar or tar+gzip, from the content's magic bytes
    blob_size: int = 0  # bytes of the blob as given


class _HashingReader(io.RawIOBase):
    """Passes reads through and hashes (and counts) every byte."""

    def __init__(self, inner: IO[bytes] | io.RawIOBase | io.BufferedIOBase) -> None:
        self._inner = inner
        self.hash = hashlib.sha256()
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self._inner.read(len(buffer))
        n = len(data) if data else 0
        if n:
            buffer[:n] = data
            self.hash.update(data)
            self.count += n
        return n

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass

    def digest(self) -> str:
        return "sha256:" + self.hash.hexdigest()


class _Prefixed(io.RawIOBase):
    """`head` (already read to sniff the format) followed by the rest of `inner`."""

    def __init__(self, head: bytes, inner: io.RawIOBase) -> None:
        self._head = head
        self._inner = inner

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        return self._inner.readinto(buffer) or 0


class _ZstdErrors(io.RawIOBase):
    """A zstd stream whose decoding errors are ValueErrors, like every other malformed-layer error."""

    def __init__(self, inner: Any, error: type[Exception]) -> None:
        self._inner, self._error = inner, error

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        try:
            return int(self._inner.readinto(buffer))
        except self._error as e:
            raise ValueError(f"zstd: {e}") from e


def _read_up_to(stream: io.RawIOBase, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = stream.read(n - len(out))
        if not chunk:
            break
        out += chunk
    return bytes(out)


class _Opened:
    """A layer opened for one pass: `plain` yields the tar, `raw` hashes the blob as given."""

    def __init__(self, src: LayerSource, stack: ExitStack) -> None:
        fileobj: IO[bytes]
        if isinstance(src, bytes | bytearray | memoryview):
            fileobj = io.BytesIO(bytes(src))
        elif isinstance(src, Path):
            fileobj = stack.enter_context(open(src, "rb"))  # noqa: SIM115
        else:
            fileobj = src
        self.raw = _HashingReader(fileobj)
        head = _read_up_to(self.raw, 512)
        sniffed = io.BufferedReader(_Prefixed(head, self.raw), _CHUNK)
        inner: io.BufferedIOBase | io.BufferedReader
        if head.startswith(b"\x1f\x8b"):
            inner = igzip.IGzipFile(fileobj=sniffed, mode="rb")
            self.media_type = MEDIA_TYPE_TAR_GZIP
        elif head.startswith(ZSTD_MAGIC):
            import zstandard  # only for zstd layers: most images are gzip

            # read_across_frames: a layer may be several frames (zstd:chunked writes many).
            reader = stack.enter_context(
                zstandard.ZstdDecompressor().stream_reader(sniffed, read_across_frames=True)
            )
            inner = io.BufferedReader(_ZstdErrors(reader, zstandard.ZstdError), _CHUNK)
            self.media_type = MEDIA_TYPE_TAR_ZSTD
        elif head[257:262] != b"ustar" and (head.startswith((b"BZh", b"\xfd7zXZ\x00"))):
            raise InvalidArgument("layer is bzip2/xz-compressed, which podhost does not support")
        else:
            inner = sniffed
            self.media_type = MEDIA_TYPE_TAR
        self.plain = _HashingReader(inner)

    def finish(self) -> None:
        """Read what the tar reader left (end-of-archive padding) so both digests cover everything."""
        self.plain.drain()
        self.raw.drain()


def _malformed(e: BaseException) -> InvalidArgument:
    return InvalidArgument(f"malformed layer archive: {type(e).__name__}: {e}")


_ISAL_ERROR = cast(type[Exception], isal_zlib.error)  # (its stub calls it an instance, not a class)
_READ_ERRORS = (tarfile.TarError, EOFError, zlib.error, _ISAL_ERROR, OSError, ValueError)


def hash_layer(src: LayerSource) -> LayerInfo:
    """The digests of a layer without extracting it (to verify a blob whose layer is already stored)."""
    with ExitStack() as stack:
        try:
            opened = _Opened(src, stack)
            opened.finish()
        except PodhostError:
            raise
        except _READ_ERRORS as e:
            raise _malformed(e) from e
    return LayerInfo(opened.raw.digest(), opened.plain.digest(), 0, opened.media_type, opened.raw.count)


def unpack_layer(
    src: LayerSource,
    dest: Path,
    *,
    expected_digest: str | None = None,
    expected_diff_id: str | None = None,
) -> LayerInfo:
    """Extract `src` into the new directory `dest` (atomically: all of it or nothing).

    Raises InvalidArgument naming the entry for a hostile or malformed archive, and for a digest that is
    not the expected one; RuntimeFailure when the host fails (disk full...).
    """
    if os.path.lexists(dest):
        raise InvalidArgument(f"layer destination {dest} already exists")
    tmp = dest.parent / f".{dest.name[:16]}.unpack-{secrets.token_hex(4)}"
    os.mkdir(tmp, 0o755)
    try:
        with ExitStack() as stack:
            try:
                opened = _Opened(src, stack)
                size = _Extractor(str(tmp)).run(opened.plain)
                opened.finish()
            except PodhostError:
                raise
            except _READ_ERRORS as e:
                raise _malformed(e) from e
        info = LayerInfo(
            opened.raw.digest(), opened.plain.digest(), size, opened.media_type, opened.raw.count
        )
        if expected_digest and info.digest != expected_digest:
            raise InvalidArgument(
                f"layer blob digest mismatch: expected {expected_digest}, got {info.digest}"
            )
        if expected_diff_id and info.diff_id != expected_diff_id:
            raise InvalidArgument(
                f"layer diff_id mismatch: config says {expected_diff_id}, content is {info.diff_id}"
            )
        os.rename(tmp, dest)
    except BaseException:
        remove_tree(tmp)
        raise
    return info


def remove_tree(path: Path | str) -> None:
    """Remove a directory tree (or a file) without following symlinks; a missing path is fine."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path, onerror=_ignore_missing)
    else:
        os.unlink(path)


def _ignore_missing(
    func: object, path: str, exc_info: tuple[type[BaseException], BaseException, object]
) -> None:
    if not isinstance(exc_info[1], FileNotFoundError):
        raise exc_info[1]


def clean_name(name: str) -> str:
    """The entry's path relative to the layer root ("" for the root itself); refuses escapes."""
    if "\x00" in name:
        raise InvalidArgument(f"layer entry {name!r}: NUL byte in name")
    if name.startswith("/"):
        raise InvalidArgument(f"layer entry {name!r}: absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidArgument(f"layer entry {name!r}: '..' component escapes the layer")
    return "/".join(parts)


def _entry_error(name: str, e: BaseException) -> PodhostError:
    if isinstance(e, OSError) and e.errno in _HOST_ERRNOS:
        return RuntimeFailure(f"layer entry {name!r}: {e}")
    return InvalidArgument(f"layer entry {name!r}: {type(e).__name__}: {e}")


def _mtime_ns(member: tarfile.TarInfo) -> int:
    return int(member.mtime * 1_000_000_000)


class _Extractor:
    """One pass over one tar into `root`. Single writer: checks by lstat are not racing anyone."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.known_dirs: set[str] = {""}  # rel paths verified to be real directories
        self.dirs: dict[str, tarfile.TarInfo] = {}  # rel -> header, attributes applied at the end
        # Directories this pass made (the root is new too) and every path it wrote: in a directory it
        # made, a name it has not written cannot exist, so the lstat before each entry is skipped.
        self.made_dirs: set[str] = {""}
        self.written: set[str] = set()

    def run(self, plain: io.RawIOBase) -> int:
        size = 0
        with tarfile.open(fileobj=plain, mode="r|", bufsize=_TAR_BUFSIZE) as tf:
            for member in _members(tf):
                rel = clean_name(member.name)
                try:
                    size += self._apply(tf, member, rel)
                except PodhostError:
                    raise
                except (OverflowError, *_READ_ERRORS) as e:
                    raise _entry_error(member.name, e) from e
        for rel, member in self.dirs.items():
            try:
                self._set_dir_attrs(rel, member)
            except (OSError, ValueError, OverflowError) as e:
                raise _entry_error(member.name, e) from e
        return size

    # --- paths ---------------------------------------------------------------------------------------

    def _abs(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def _parent(self, rel: str, entry: str) -> str:
        """Make sure every component of the directory `rel` is a real directory; create missing ones."""
        if rel in self.known_dirs:
            return self._abs(rel)
        walked = ""
        for comp in rel.split("/"):
            walked = f"{walked}/{comp}" if walked else comp
            if walked in self.known_dirs:
                continue
            path = self._abs(walked)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                os.mkdir(path, 0o755)
                self.made_dirs.add(walked)
                self.written.add(walked)
            else:
                if stat.S_ISLNK(st.st_mode):
                    raise InvalidArgument(
                        f"layer entry {entry!r}: would be written through the symlink {walked!r}"
                    )
                if not stat.S_ISDIR(st.st_mode):
                    raise InvalidArgument(f"layer entry {entry!r}: parent {walked!r} is not a directory")
            self.known_dirs.add(walked)
        return self._abs(rel)

    def _forget(self, rel: str) -> None:
        """`rel` is being removed: it and everything under it are no longer known directories."""
        prefix = rel + "/"
        self.known_dirs = {d for d in self.known_dirs if d != rel and not d.startswith(prefix)}
        for d in [d for d in self.dirs if d == rel or d.startswith(prefix)]:
            del self.dirs[d]

    def _remove_existing(self, rel: str, path: str, st: os.stat_result) -> None:
        if stat.S_ISDIR(st.st_mode):
            self._forget(rel)
            shutil.rmtree(path)
        else:
            os.unlink(path)

    # --- entries -------------------------------------------------------------------------------------

    def _apply(self, tf: tarfile.TarFile, m: tarfile.TarInfo, rel: str) -> int:
        if rel == "":
            if not m.isdir():
                raise InvalidArgument(f"layer entry {m.name!r}: the layer root must be a directory")
            self.dirs[""] = m
            return 0
        parent_rel, _, base = rel.rpartition("/")
        parent = self._parent(parent_rel, m.name)
        if base.startswith(WHITEOUT_PREFIX):
            hidden = base[len(WHITEOUT_PREFIX) :]
            self.written.add(f"{parent_rel}/{hidden}" if parent_rel else hidden)  # may become a 0:0 device
            self._whiteout(m, parent, base)
            return 0
        if m.ischr() or m.isblk():
            raise InvalidArgument(f"layer entry {m.name!r}: device nodes are not allowed in a layer")
        path = f"{parent}/{base}"
        existing: os.stat_result | None = None
        if parent_rel not in self.made_dirs or rel in self.written:
            existing = _lstat(path)
        self.written.add(rel)
        if m.isdir():
            if existing is None or not stat.S_ISDIR(existing.st_mode):
                if existing is not None:
                    self._remove_existing(rel, path, existing)
                os.mkdir(path, 0o700)
                self.made_dirs.add(rel)
            self.known_dirs.add(rel)
            self.dirs[rel] = m
            return 0
        if m.islnk():
            target = self._link_target(m)
            if existing is not None:
                self._remove_existing(rel, path, existing)
            os.link(target, path, follow_symlinks=False)
            return 0
        if existing is not None:
            self._remove_existing(rel, path, existing)
        if m.isreg():
            return self._regular(tf, m, path)
        if m.issym():
            if not m.linkname:
                raise InvalidArgument(f"layer entry {m.name!r}: symlink with an empty target")
            os.symlink(m.linkname, path)
        elif m.isfifo():
            os.mkfifo(path, 0o600)
        else:
            raise InvalidArgument(f"layer entry {m.name!r}: unsupported tar entry type {m.type!r}")
        self._set_attrs(path, m, is_symlink=m.issym())
        return 0

    def _whiteout(self, m: tarfile.TarInfo, parent: str, base: str) -> None:
        if base == OPAQUE_WHITEOUT:
            os.setxattr(parent, OVERLAY_OPAQUE_XATTR, b"y", follow_symlinks=False)
            return
        if base.startswith(WHITEOUT_META_PREFIX):
            log.debug("ignoring whiteout metadata entry %r", m.name)
            return
        hidden = base[len(WHITEOUT_PREFIX) :]
        if hidden in ("", ".", ".."):
            raise InvalidArgument(f"layer entry {m.name!r}: whiteout of an invalid name")
        path = f"{parent}/{hidden}"
        if os.path.lexists(path):
            return  # the same layer's own entry wins: whiteouts only hide lower layers
        os.mknod(path, stat.S_IFCHR | 0o000, os.makedev(0, 0))
        os.utime(path, ns=(_mtime_ns(m), _mtime_ns(m)), follow_symlinks=False)

    def _link_target(self, m: tarfile.TarInfo) -> str:
        link = m.linkname
        if not link or link.startswith("/"):
            raise InvalidArgument(f"layer entry {m.name!r}: hardlink to an absolute or empty path {link!r}")
        try:
            target_rel = clean_name(link)
        except InvalidArgument as e:
            raise InvalidArgument(
                f"layer entry {m.name!r}: hardlink target {link!r} escapes the layer"
            ) from e
        if not target_rel:
            raise InvalidArgument(f"layer entry {m.name!r}: hardlink to the layer root")
        parent_rel, _, base = target_rel.rpartition("/")
        walked = ""
        for comp in parent_rel.split("/") if parent_rel else []:
            walked = f"{walked}/{comp}" if walked else comp
            st = _lstat(self._abs(walked))
            if st is None or not stat.S_ISDIR(st.st_mode):
                raise InvalidArgument(
                    f"layer entry {m.name!r}: hardlink target {link!r} is not reached through directories "
                    "of this layer"
                )
        target = self._abs(target_rel)
        st = _lstat(target)
        if st is None:
            raise InvalidArgument(f"layer entry {m.name!r}: hardlink target {link!r} is not in this layer")
        if stat.S_ISDIR(st.st_mode):
            raise InvalidArgument(f"layer entry {m.name!r}: hardlink to a directory {link!r}")
        return target

    def _regular(self, tf: tarfile.TarFile, m: tarfile.TarInfo, path: str) -> int:
        # Created with its mode (the layer's work directory is private until renamed into place), so
        # fchmod is needed only for what the umask strips or open cannot set (setuid and the like).
        mode = m.mode & 0o7777
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode & 0o777)
        try:
            # The stream stands at the entry's data once its header is read: read it there, without an
            # extractfile object per entry (sparse entries need tarfile's map, so they still take one).
            src = tf.extractfile(m) if m.issparse() else None
            read = src.read if src is not None else tf.fileobj.read  # type: ignore[union-attr]
            written = 0
            while written < m.size and (chunk := read(min(_CHUNK, m.size - written))):
                view = memoryview(chunk)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                written += len(chunk)
            if written != m.size:
                raise InvalidArgument(f"layer entry {m.name!r}: truncated ({written} of {m.size} bytes)")
            if (m.uid, m.gid) != _CREATOR:  # a new file is already ours (no directory is setgid yet)
                os.fchown(fd, m.uid, m.gid)  # clears setuid/setgid: the fchmod below comes after
            if mode != mode & 0o777 & ~_UMASK:
                os.fchmod(fd, mode)
            _set_xattrs(path, m)
            os.utime(fd, ns=(_mtime_ns(m), _mtime_ns(m)))
        finally:
            os.close(fd)
        return m.size

    def _set_attrs(self, path: str, m: tarfile.TarInfo, *, is_symlink: bool) -> None:
        os.chown(path, m.uid, m.gid, follow_symlinks=False)
        if not is_symlink:
            os.chmod(path, m.mode & 0o7777)
        _set_xattrs(path, m)
        os.utime(path, ns=(_mtime_ns(m), _mtime_ns(m)), follow_symlinks=False)

    def _set_dir_attrs(self, rel: str, m: tarfile.TarInfo) -> None:
        path = self._abs(rel)
        st = _lstat(path)
        if st is None or not stat.S_ISDIR(st.st_mode):
            return
        self._set_attrs(path, m, is_symlink=False)


def _members(tf: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    """The stream's entries one by one, without tarfile keeping every header in memory."""
    while (member := tf.next()) is not None:
        tf.members.clear()  # type: ignore[attr-defined]
        yield member


def _lstat(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _set_xattrs(path: str, m: tarfile.TarInfo) -> None:
    """Apply the archive's xattrs (file capabilities, user.*), never trusted.* (overlay metadata)."""
    for key, value in m.pax_headers.items():
        if not key.startswith(_PAX_XATTR):
            continue
        name = key[len(_PAX_XATTR) :]
        if name.startswith("trusted.") or name == "security.selinux":
            continue
        try:
            os.setxattr(path, name, value.encode("utf-8", "surrogateescape"), follow_symlinks=False)
        except OSError as e:
            log.debug("xattr %s on %s not applied: %s", name, path, e)
