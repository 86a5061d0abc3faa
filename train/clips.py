"""Where the clips of a MELD-format CSV are, and which rows have one.

Three layouts are understood:
* the workbench's export (webapp/export.py): a zip, or the folder it unpacks to, holding
  `{base}/{base}.csv` and `{base}/clips/dia{D}_utt{U}.mp4`; --train (or --dev) may name the zip or
  the folder, and the clips come with it;
* the MELD release: a folder holding `train_splits/`, `dev_splits_complete/` and
  `output_repeated_splits_test/`, given as --clips or lying next to the CSV (train.train starts
  the clip path only when --clips, --dev-clips or an export is given); the split folder is picked
  from the CSV's name (train / dev / test);
* any folder of `dia{D}_utt{U}.mp4` clips given as --clips.

Rows are matched to clips by core.meld.clip_name(Dialogue_ID, Utterance_ID). A row without a clip
is kept (its text can still train) and listed by clip name; nothing is dropped silently.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from core.meld import MeldFormatError, clip_name, read_meld_csv
from core.writes import os_error_line

from .data import TextExample, text_examples
from core.types import UserError

RELEASE_SPLITS = {"train": "train_splits", "dev": "dev_splits_complete", "test": "output_repeated_splits_test"}
EXPORT_CLIPS = "clips"
CLIP_PATTERN = re.compile(r"dia\d+_utt\d+\.mp4", re.IGNORECASE)
MAX_LISTED = 50          # names listed in a card; the count is always complete


class ClipDataError(UserError, RuntimeError):
    """The clip data cannot be used; the message says why in one line."""


@dataclass
class ClipRow:
    """One labelled utterance and its clip (None when the clip is missing)."""

    example: TextExample
    name: str                    # dia{D}_utt{U}.mp4 ("" when the row has no ids)
    clip: Path | None


@dataclass
class ClipSplit:
    """The labelled rows of one CSV with their clips, and what is missing."""

    csv: Path
    clip_dir: Path | None
    layout: str                  # "export zip", "export folder", "MELD release", "clips folder", "none"
    rows: list[ClipRow]
    read_rows: int
    skipped: list[str] = field(default_factory=list)    # rows that are no example (no label, no text)
    sha256: str = ""

    @property
    def examples(self) -> list[TextExample]:
        return [r.example for r in self.rows]

    @property
    def missing(self) -> list[str]:
        """Clip names (or a note for rows without ids) of the rows whose clip is not there."""
        return [r.name or f"(row without Dialogue_ID/Utterance_ID: {r.example.text[:40]!r})"
                for r in self.rows if r.clip is None]

    def describe(self) -> dict:
        """What a model card records about this split."""
        return {"csv": self.csv.name, "sha256": self.sha256, "layout": self.layout,
                "rows": self.read_rows, "examples": len(self.rows), "skipped": len(self.skipped),
                "clips_found": sum(r.clip is not None for r in self.rows),
                "clips_missing": len(self.missing), "missing_names": self.missing[:MAX_LISTED]}


@dataclass
class Source:
    """A CSV and the folder its clips live in, as resolved from the command line."""

    csv: Path
    clip_dir: Path | None
    layout: str


def split_kind(csv: Path) -> str | None:
    """train / dev / test from a CSV's name (MELD's train_sent_emo.csv etc.), else None."""
    words = set(re.split(r"[^a-z]+", csv.stem.lower()))
    found = [k for k in RELEASE_SPLITS if k in words]
    return found[0] if len(found) == 1 else None


def release_dir(folder: Path, csv: Path) -> Path | None:
    """The split folder of a MELD release `folder` that belongs to `csv`, if `folder` is one."""
    present = {k: folder / d for k, d in RELEASE_SPLITS.items() if (folder / d).is_dir()}
    if not present:
        return None
    kind = split_kind(csv)
    if kind is None:
        raise ClipDataError(f"{folder} is a MELD release folder, but {csv.name!r} does not say which split "
                            f"it is (train, dev or test): give the split folder itself as the clips folder")
    if kind not in present:
        raise ClipDataError(f"{folder} is a MELD release folder without {RELEASE_SPLITS[kind]}/ "
                            f"for {csv.name}")
    return present[kind]


def _export_csv(folder: Path) -> Path | None:
    """The one CSV of an unpacked export folder (at its top or one level down), if any."""
    found = sorted(folder.glob("*.csv")) or sorted(folder.glob("*/*.csv"))
    if len(found) > 1:
        raise ClipDataError(f"{folder} holds {len(found)} CSV files; name the one to use")
    return found[0] if found else None


MAX_UNZIP_BYTES = 20 * 2**30    # what an export zip may unpack to in all (20 GiB)
MAX_UNZIP_MEMBERS = 200_000     # entries in it (MELD's train split has about 10,000 clips)
MAX_UNZIP_RATIO = 100           # unpacked / packed size of a member over 1 MB: clips are ~1, CSVs ~5
_UNZIP_CHUNK = 1 << 20


def unpack_export(zip_path: Path, into: Path, max_bytes: int = MAX_UNZIP_BYTES) -> Path:
    """Extract an export zip's CSV and clips (nothing else, names checked) into `into`.

    Refused in one line, before anything is written: more than MAX_UNZIP_MEMBERS entries, a
    member named outside the folder (absolute, `..`), a member over 1 MB that unpacks more than
    MAX_UNZIP_RATIO times its packed size, or members that unpack to more than `max_bytes` in
    all. Extraction counts the bytes it writes too and stops at `max_bytes`.
    """
    try:
        with zipfile.ZipFile(zip_path) as z:
            infos = z.infolist()
            if len(infos) > MAX_UNZIP_MEMBERS:
                raise ClipDataError(f"{zip_path.name} holds {len(infos)} entries; the limit is "
                                    f"{MAX_UNZIP_MEMBERS}")
            for m in infos:
                parts = m.filename.replace("\\", "/").split("/")
                if m.filename.startswith(("/", "\\")) or ".." in parts or ":" in parts[0]:
                    raise ClipDataError(f"{zip_path.name} names a file outside its folder "
                                        f"({m.filename[:80]!r}); it is refused")
                if m.file_size > 2**20 and m.file_size > MAX_UNZIP_RATIO * max(m.compress_size, 1):
                    raise ClipDataError(f"{zip_path.name} looks like a zip bomb: {Path(m.filename).name[:60]} "
                                        f"unpacks {m.file_size // max(m.compress_size, 1)} times its size")
            members = [m for m in infos if not m.is_dir()]
            csvs = [m for m in members if m.filename.lower().endswith(".csv")]
            if len(csvs) != 1:
                raise ClipDataError(f"{zip_path.name} is not a workbench export: "
                                    f"expected one CSV, found {len(csvs)}")
            wanted = [csvs[0]] + [m for m in members if CLIP_PATTERN.fullmatch(Path(m.filename).name)
                                  and Path(m.filename).parent.name == EXPORT_CLIPS]
            total = sum(m.file_size for m in wanted)
            if total > max_bytes:
                raise ClipDataError(f"{zip_path.name} unpacks to {total / 2**20:.0f} MB; the limit is "
                                    f"{max_bytes / 2**20:.0f} MB")
            (into / EXPORT_CLIPS).mkdir(parents=True, exist_ok=True)
            budget = [max_bytes]
            _extract(z, csvs[0], into / Path(csvs[0].filename).name, budget)
            for m in wanted[1:]:
                # only the base name: nothing can land outside `into`
                _extract(z, m, into / EXPORT_CLIPS / Path(m.filename).name, budget)
    except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError, EOFError) as err:
        if isinstance(err, ClipDataError):
            raise
        if isinstance(err, OSError):        # disk full, permission: one line, no absolute path
            raise ClipDataError(f"{zip_path.name}: {os_error_line(err)}") from None
        raise ClipDataError(f"{zip_path.name} cannot be read as a zip "
                            f"({type(err).__name__}: {str(err).splitlines()[0][:80] if str(err) else ''})") from None
    return into / Path(csvs[0].filename).name


def _extract(z: zipfile.ZipFile, member: zipfile.ZipInfo, target: Path, budget: list[int]) -> None:
    """Copy one member to `target`, taking its bytes from `budget[0]`; refused when that runs out."""
    with z.open(member) as src, open(target, "wb") as dst:
        while chunk := src.read(_UNZIP_CHUNK):
            budget[0] -= len(chunk)
            if budget[0] < 0:
                raise ClipDataError(f"{Path(member.filename).name[:60]} unpacks past the size limit; "
                                    "the zip is refused")
            dst.write(chunk)


def resolve(data: str | Path, clips: str | Path | None, workdir: Path | None = None) -> Source:
    """Find the CSV and the clip folder for --train/--dev `data` and an optional --clips folder.

    `workdir` is where an export zip is unpacked (a fresh temp folder when None; the caller
    removes it).
    """
    data = Path(data)
    if not data.exists():
        raise ClipDataError(f"{data} does not exist")
    layout = ""
    if data.is_file() and data.suffix.lower() == ".zip":
        data = unpack_export(data, workdir or Path(tempfile.mkdtemp(prefix="retrain-export-")))
        layout = "export zip"
    elif data.is_dir():
        csv = _export_csv(data)
        if csv is None:
            raise ClipDataError(f"{data} holds no CSV: expected a workbench export folder")
        data, layout = csv, "export folder"
    if clips is not None:
        folder = Path(clips)
        if not folder.is_dir():
            raise ClipDataError(f"clips folder {folder} does not exist")
        split = release_dir(folder, data)
        return Source(data, split or folder, "MELD release" if split else (layout or "clips folder"))
    if layout:
        return Source(data, data.parent / EXPORT_CLIPS, layout)
    split = release_dir(data.parent, data)
    if split is not None:
        return Source(data, split, "MELD release")
    raise ClipDataError(f"no clips for {data.name}: give --clips DIR (a folder of dia<D>_utt<U>.mp4, "
                        "or the MELD release folder), or pass the workbench's export zip or folder")


def load_clip_split(source: Source, turns: int, limit: int | None = None, ahead: int = 0) -> ClipSplit:
    """Read the CSV (core.meld) into examples with the app's context (`turns` previous and
    `ahead` following utterances), each matched to its clip."""
    try:
        table = read_meld_csv(source.csv)
    except MeldFormatError as err:
        raise ClipDataError(f"{source.csv.name}: {err}") from None
    examples, skipped = text_examples(table.rows, turns, ahead)
    if limit is not None:
        examples = examples[:limit]
    present = {p.name.lower(): p for p in source.clip_dir.iterdir()} \
        if source.clip_dir is not None and source.clip_dir.is_dir() else {}
    rows = []
    for ex in examples:
        if ex.dialogue_id is None or ex.utterance_id is None:
            rows.append(ClipRow(ex, "", None))
            continue
        name = clip_name(ex.dialogue_id, ex.utterance_id)
        rows.append(ClipRow(ex, name, present.get(name.lower())))
    digest = hashlib.sha256(source.csv.read_bytes()).hexdigest()
    return ClipSplit(source.csv, source.clip_dir, source.layout, rows, len(table.rows), skipped, digest)


def holdout(split: ClipSplit, share: float, seed: int) -> tuple[ClipSplit, ClipSplit]:
    """A seeded `share` of the rows (at least 1, never all) as dev; the rest stays train."""
    import numpy as np
    n = len(split.rows)
    if n < 2:
        raise ClipDataError(f"{split.csv.name} has {n} labelled row(s): too few to hold any out as dev; "
                            "give --dev")
    k = min(n - 1, max(1, round(share * n)))
    picked = set(np.random.default_rng(seed).permutation(n)[:k].tolist())
    parts = [ClipSplit(split.csv, split.clip_dir, split.layout,
                       [r for i, r in enumerate(split.rows) if (i in picked) == dev], split.read_rows,
                       [] if dev else split.skipped, split.sha256) for dev in (False, True)]
    return parts[0], parts[1]
