"""A registry of known models, for platforms asking "which known model is this upload derived from?".

Each entry is a name with metadata, the model's permutation- and rescaling-invariant weight signature
(``fingerprint.signature``) and any number of evidence files (fingerprints, watermark keys: ``evidence``). It
lives in a SQLAlchemy database: a SQLite file by default (WAL journal and a busy timeout, so concurrent writers
wait instead of failing), or any database URL such as ``postgresql+psycopg://...``.

``search`` works in two stages. The first cut is a FAISS index over the signatures: the entries nearest to the
suspect's signature (white-box suspects only), plus every entry registered with evidence but no signature. Then
every candidate's evidence is verified against the suspect and the candidates ranked by p-value. A black-box
suspect (an endpoint) has no signature, so every entry with evidence is a candidate.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from sqlalchemy import JSON, ForeignKey, Integer, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column  # module level: the mapping reads annotations
from torch import nn

from .errors import AccessError, ConfigError, FileFormatError
from .verdict import Verdict


class Base(DeclarativeBase):
    pass


class Entry(Base):
    __tablename__ = "entries"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created: Mapped[str] = mapped_column(String(40))
    meta: Mapped[dict] = mapped_column(JSON, default=dict)
    signature: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    revision: Mapped[int] = mapped_column(Integer, default=0)  # counts signature replacements (index staleness)


class Print(Base):
    __tablename__ = "fingerprints"
    __table_args__ = (UniqueConstraint("entry_id", "sha256"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    entry_id: Mapped[int] = mapped_column(ForeignKey("entries.id", ondelete="CASCADE"), index=True)
    scheme: Mapped[str] = mapped_column(String(200))
    sha256: Mapped[str] = mapped_column(String(64))
    blob: Mapped[bytes] = mapped_column(LargeBinary)


@dataclass(frozen=True)
class Match:
    """One candidate of a search: its name, how close its signature is (None without one) and the strongest
    verdict of its fingerprints (None when it has none)."""

    name: str
    distance: float | None
    verdict: Verdict | None
    meta: dict

    @property
    def p_value(self) -> float:
        return 1.0 if self.verdict is None else self.verdict.p_value


class Registry:
    """The store at ``url`` (a database URL, or a path for a SQLite file)."""

    def __init__(self, url: str | Path = "modelprint-registry.db"):
        from sqlalchemy import create_engine, event
        from sqlalchemy.exc import DBAPIError

        url = str(url)
        if "://" not in url:
            url = f"sqlite:///{Path(url).expanduser()}"
        self.url = url
        sqlite = url.startswith("sqlite")
        self.engine = create_engine(url, connect_args={"timeout": 60} if sqlite else {})
        if sqlite:

            @event.listens_for(self.engine, "connect")
            def _pragmas(conn, _record):  # concurrent readers and writers, foreign keys enforced
                cur = conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA busy_timeout=60000")
                cur.execute("PRAGMA foreign_keys=ON")
                cur.close()

        for attempt in range(10):  # another process may be creating the same tables: look again, then create
            try:
                Base.metadata.create_all(self.engine)
                break
            except DBAPIError:
                if attempt == 9:
                    raise
                time.sleep(0.05 * (attempt + 1))
        self._index: tuple[tuple, object, list[int]] | None = None  # (stamp, FAISS index, entry ids)

    def _session(self):
        from sqlalchemy.orm import Session

        return Session(self.engine, expire_on_commit=False)

    # --- writing ---
    def add(self, name: str, model: nn.Module | None = None, fingerprints=(), meta: dict | None = None,
            signature: np.ndarray | None = None) -> int:  # fmt: skip
        """Register ``name`` with the signature of ``model`` (or a precomputed ``signature``) and fingerprint files
        (paths); returns its id. Adding to an existing name adds fingerprints and replaces the signature."""
        from sqlalchemy import select

        if not name or len(name) > 200:
            raise ConfigError("a registry name must have 1 to 200 characters")
        if model is not None:
            from .fingerprint.signature import signature as weight_signature

            signature = weight_signature(model)
        blobs = [self._read_fingerprint(p) for p in fingerprints]
        with self._session() as s, s.begin():
            entry = s.scalars(select(Entry).where(Entry.name == name)).one_or_none()
            if entry is None:
                entry = Entry(name=name, created=datetime.now(UTC).isoformat(timespec="seconds"), meta=meta or {})
                s.add(entry)
                s.flush()
            elif meta:
                entry.meta = {**entry.meta, **meta}
            if signature is not None:
                entry.revision = (entry.revision or 0) + (entry.signature is not None)
                entry.signature = np.asarray(signature, np.float32).tobytes()
            known = set(s.scalars(select(Print.sha256).where(Print.entry_id == entry.id)))
            for scheme, digest, blob in blobs:
                if digest not in known:
                    s.add(Print(entry_id=entry.id, scheme=scheme, sha256=digest, blob=blob))
                    known.add(digest)
            return entry.id

    def add_signatures(self, names: list[str], signatures: np.ndarray, meta: dict | None = None) -> None:
        """Register many signature-only entries in one transaction (imports, and the scale benchmark)."""
        now = datetime.now(UTC).isoformat(timespec="seconds")
        sigs = np.asarray(signatures, np.float32)
        if sigs.ndim != 2 or len(sigs) != len(names):
            raise ConfigError(f"need one signature row per name, got {sigs.shape} for {len(names)} names")
        with self._session() as s, s.begin():
            s.add_all(
                Entry(name=n, created=now, meta=meta or {}, signature=v.tobytes())
                for n, v in zip(names, sigs, strict=True)
            )

    def remove(self, name: str) -> bool:
        from sqlalchemy import delete

        with self._session() as s, s.begin():
            removed = s.execute(delete(Entry).where(Entry.name == name)).rowcount  # fingerprints cascade
        return bool(removed)

    @staticmethod
    def _read_fingerprint(path) -> tuple[str, str, bytes]:
        """(scheme, sha256, bytes) of an evidence file, validated before it is stored."""
        from . import evidence

        fp = evidence.load(path)  # any kind of evidence; raises FileFormatError naming the file
        scheme = getattr(fp, "scheme", None)
        scheme = scheme.spec() if hasattr(scheme, "spec") else str(scheme or "weights")
        blob = Path(path).read_bytes()
        return scheme, hashlib.sha256(blob).hexdigest(), blob

    # --- reading ---
    def __len__(self) -> int:
        from sqlalchemy import func, select

        with self._session() as s:
            return int(s.scalar(select(func.count(Entry.id))))

    def entries(self) -> list[dict]:
        from sqlalchemy import func, select

        with self._session() as s:
            counts = dict(s.execute(select(Print.entry_id, func.count(Print.id)).group_by(Print.entry_id)).all())
            return [
                {"name": e.name, "created": e.created, "signature": e.signature is not None,
                 "fingerprints": counts.get(e.id, 0), "meta": e.meta}
                for e in s.scalars(select(Entry).order_by(Entry.id))
            ]  # fmt: skip

    def _signature_index(self):
        """A FAISS exact L2 index over every stored signature, rebuilt when entries change."""
        import faiss
        from sqlalchemy import func, select

        with self._session() as s:
            # inserts, deletes and replaced signatures, by any process, change this
            stamp = tuple(s.execute(select(func.count(Entry.id), func.max(Entry.id), func.sum(Entry.revision))).one())
            if self._index is not None and self._index[0] == stamp:
                return self._index[1], self._index[2]
            rows = s.execute(select(Entry.id, Entry.signature).where(Entry.signature.is_not(None))).all()
        if not rows:
            return None, []
        ids = [r[0] for r in rows]
        vectors = np.stack([np.frombuffer(r[1], np.float32) for r in rows])
        index = faiss.IndexFlatL2(vectors.shape[1])
        index.add(np.ascontiguousarray(vectors))
        self._index = (stamp, index, ids)
        return index, ids

    def nearest(self, signature: np.ndarray, k: int = 100) -> list[tuple[int, float]]:
        """The first cut: (entry id, Euclidean distance) of the ``k`` signatures nearest to ``signature``."""
        index, ids = self._signature_index()
        if index is None:
            return []
        query = np.asarray(signature, np.float32).reshape(1, -1)
        if query.shape[1] != index.d:
            raise ConfigError(f"signature has {query.shape[1]} numbers, the registry's have {index.d}")
        dist, pos = index.search(query, min(k, index.ntotal))
        return [(ids[p], float(np.sqrt(max(d, 0.0)))) for d, p in zip(dist[0], pos[0], strict=True) if p >= 0]

    def search(self, suspect, *, top_k: int = 5, first_cut: int = 100, alpha: float | None = None,
               cache_dir=None, device: str = "cpu") -> list[Match]:  # fmt: skip
        """The registered models ``suspect`` most likely derives from, best first. ``suspect``: a torch module,
        a model file or lineage expression (white-box: first cut by signature), or any black-box ``Model``. An
        entry's verdict is its strongest fingerprint's, with Holm's p-value over the entry's fingerprints."""
        from sqlalchemy import select

        from . import evidence
        from .fingerprint.signature import signature

        if isinstance(suspect, str | Path):
            from .lineage import resolve

            suspect = resolve(suspect, cache_dir=cache_dir, device=device)
        distances: dict[int, float] = {}
        if isinstance(suspect, nn.Module):
            distances = dict(self.nearest(signature(suspect), first_cut))
        with self._session() as s:
            verifiable = Entry.id.in_(select(Print.entry_id))
            if distances:  # the nearest signatures, and entries that have evidence but no signature to compare
                near = Entry.id.in_(list(distances)) | (verifiable & Entry.signature.is_(None))
                entries = s.scalars(select(Entry).where(near)).all()
            else:  # black-box: every entry that can be verified
                entries = s.scalars(select(Entry).where(verifiable)).all()
            prints = s.execute(select(Print.entry_id, Print.blob).where(Print.entry_id.in_([e.id for e in entries])))
            blobs: dict[int, list[bytes]] = {}
            for entry_id, blob in prints:
                blobs.setdefault(entry_id, []).append(blob)
        matches = []
        with tempfile.TemporaryDirectory() as tmp:
            for e in entries:
                best, k = None, len(blobs.get(e.id, []))
                for i, blob in enumerate(blobs.get(e.id, [])):
                    path = Path(tmp) / f"{e.id}-{i}.fp"
                    path.write_bytes(blob)
                    try:
                        fp = evidence.load(path)
                    except FileFormatError as err:
                        raise FileFormatError(
                            f"registry entry {e.name!r}: stored fingerprint is damaged ({err})"
                        ) from None
                    # Holm over the entry's k fingerprints: its smallest p-value times k, so that an entry with
                    # many fingerprints is not accused more often by chance (each decided at alpha / k)
                    family = fp.target_fpr if alpha is None else alpha
                    try:
                        v = evidence.verify(fp, suspect, alpha=family / k, device=device)
                    except (AccessError, ConfigError):  # e.g. a weights fingerprint of another architecture
                        continue
                    if k > 1:
                        v = replace(v, p_value=min(1.0, k * v.p_value), alpha=family,
                                    method=f"{v.method}; Holm over {k} fingerprints")  # fmt: skip
                    if best is None or v.p_value < best.p_value:
                        best = v
                matches.append(Match(e.name, distances.get(e.id), best, e.meta))
        far = float("inf")
        matches.sort(key=lambda m: (m.p_value, m.distance if m.distance is not None else far))
        return matches[:top_k]
