"""Ready-to-run checkpoints from published weights: ``python -m synseg_core.pretrained list | fetch | convert``.

``fetch`` downloads a CLIPSeg (or CLIP) repository from the Hugging Face Hub, only when you run it, and
converts it; ``convert`` does the same for files already on disk. Either way the result is an ordinary
SynSeg checkpoint folder (``config.json`` + ``model.safetensors``) that ``segment``, ``evaluate``,
``export``, every backend, the ROS node (``model_path:=DIR``) and training (``model.init=DIR``) take as
they are. The folder is written next to its final place and renamed into it, so it is either complete
or absent; an existing folder is replaced only with ``--force`` and only once the new one is complete.

Downloads go to ``$HF_HUB_CACHE/synseg/`` (default ``~/.cache/huggingface/hub/synseg/``), one file per
repository commit; a cut-off download stays there as ``FILE.incomplete`` and the next ``fetch`` resumes
it. Every file is checked against the Hub's hash (sha256 for large files, the git blob id for small
ones), and the repository, commit and each file's sha256 are recorded in the checkpoint's config.json
(``source``).
"""
from __future__ import annotations

import argparse
import errno
import hashlib
import logging
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("synseg.pretrained")


@dataclass(frozen=True)
class Source:
    repo: str
    description: str
    license: str
    size: str
    method: str = "synseg"


SOURCES: dict[str, Source] = {
    "clipseg-rd64-refined": Source("CIDAS/clipseg-rd64-refined", "CLIPSeg, ViT-B/16 + rd64 decoder, refined head (finer masks)",
                                   "Apache-2.0", "603 MB"),
    "clipseg-rd64-uni": Source("CIDAS/clipseg-rd64", "CLIPSeg, ViT-B/16 + rd64-uni decoder (SynSeg's starting point)",
                               "Apache-2.0", "603 MB"),
    "naclip-vit-b-16": Source("openai/clip-vit-base-patch16", "NACLIP on OpenAI CLIP ViT-B/16 (training-free)", "MIT",
                              "~600 MB", method="naclip"),
    "clearclip-vit-b-16": Source("openai/clip-vit-base-patch16", "ClearCLIP on OpenAI CLIP ViT-B/16 (training-free)", "MIT",
                                 "~600 MB", method="clearclip"),
}
METHODS = ("synseg", "naclip", "clearclip")
# Fetched in this order; the weights are the first of WEIGHTS the repository has.
METADATA_FILES = ("config.json", "preprocessor_config.json")
WEIGHTS = ("model.safetensors", "pytorch_model.bin")


class FetchError(RuntimeError):
    """A download could not be completed; the message says why and what to do."""


# ---------------------------------------------------------------- writing the checkpoint folder

def write_checkpoint(model: Any, out: Path, force: bool = False, metadata: dict[str, str] | None = None) -> Path:
    """Save ``model`` as a checkpoint folder at ``out``, atomically: a temp folder beside it, then a rename.

    An existing ``out`` is refused unless ``force``; with ``force`` it is replaced only after the new folder
    is complete. On any error (a full disk, say) the temp folder is removed and ``out`` is as it was.
    """
    from synseg_core.checkpoint import save_model

    out = Path(out)
    check_output(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        save_model(model, staging, metadata=metadata)
        if out.exists():
            old = staging.with_suffix(".old")
            out.rename(old)
            try:
                staging.rename(out)
            except OSError:
                old.rename(out)  # put the previous checkpoint back
                raise
            shutil.rmtree(old)
        else:
            staging.rename(out)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if exc.errno == errno.ENOSPC:
            raise OSError(exc.errno, f"no space left on the device while writing {out} (a ViT-B/16 checkpoint needs about "
                          f"600 MB): free space or choose another --out; {out} was not changed") from exc
        raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def check_output(out: Path, force: bool) -> None:
    if out.exists() and not force:
        raise FileExistsError(f"{out} already exists: choose another --out, or pass --force to replace it")
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder; refusing to replace it")


# ---------------------------------------------------------------- downloading

def _git_blob_sha1(path: Path) -> str:
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())  # noqa: S324 - git's object id, not security
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _verify(path: Path, etag: str | None, size: int | None) -> None:
    """The Hub's ETag is the file's sha256 (LFS files) or its git blob id (small files)."""
    if size is not None and path.stat().st_size != size:
        raise FetchError(f"{path.name}: got {path.stat().st_size} bytes, the server announced {size}")
    tag = (etag or "").strip('"').removeprefix("W/").strip('"')
    if len(tag) == 64 and sha256(path) != tag or len(tag) == 40 and _git_blob_sha1(path) != tag:
        raise FetchError(f"{path.name}: its content does not match the server's hash {tag}; the download was corrupted")


def _network_error(repo: str, exc: Exception) -> FetchError:
    return FetchError(
        f"cannot reach the Hugging Face Hub for {repo} ({type(exc).__name__}: {exc}). Check the network (and HF_ENDPOINT, "
        "if set), then run the same command again: a partial download resumes"
    )


def download_repository(repo: str, revision: str | None = None) -> tuple[dict[str, Path], str]:
    """Download config, preprocessing and weights files of ``repo`` at ``revision``; returns ({name: path}, commit)."""
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers

    if constants.is_offline_mode():
        raise FetchError("HF_HUB_OFFLINE=1 is set, so nothing may be downloaded: run this one command with HF_HUB_OFFLINE=0 "
                         f"(HF_HUB_OFFLINE=0 python -m synseg_core.pretrained fetch {repo} ...), or use 'convert' on files you have")
    endpoint = os.environ.get("HF_ENDPOINT", constants.ENDPOINT).rstrip("/")  # read now: tests and users may set it late
    headers = build_hf_headers(library_name="synseg")
    commit = revision or "main"
    files: dict[str, Path] = {}
    wanted: list[tuple[str, ...]] = [(name,) for name in METADATA_FILES] + [WEIGHTS]
    for choices in wanted:
        for name in choices:
            url = hf_hub_url(repo, name, revision=commit, endpoint=endpoint)
            try:
                meta = get_hf_file_metadata(url, headers=headers)
            except RepositoryNotFoundError as exc:
                raise FetchError(f"{repo}: no such repository on {endpoint} (or it is private: log in with "
                                 "'hf auth login')") from exc
            except RevisionNotFoundError as exc:
                raise FetchError(f"{repo}: no revision {commit!r}") from exc
            except EntryNotFoundError:
                continue
            except HfHubHTTPError as exc:
                status = exc.response.status_code if exc.response is not None else None
                if status == 404:
                    continue
                raise _network_error(repo, exc) from exc
            except Exception as exc:  # httpx's connection errors are not OSErrors
                raise _network_error(repo, exc) from exc
            if meta.commit_hash:
                commit = meta.commit_hash  # every later file from the same commit
            files[name] = _download_file(repo, commit, name, meta, headers, http_get)
            break
        else:
            if choices == WEIGHTS:
                raise FetchError(f"{repo}: found neither {' nor '.join(WEIGHTS)} at revision {revision or 'main'}; "
                                 "is it a CLIPSeg (or CLIP) repository?")
            if choices == ("config.json",):
                raise FetchError(f"{repo}: no config.json at revision {revision or 'main'} (wrong repository id or revision?)")
    return files, commit


def _download_file(repo: str, commit: str, name: str, meta: Any, headers: dict[str, str], http_get: Any) -> Path:
    from huggingface_hub import constants

    folder = Path(os.environ.get("HF_HUB_CACHE", constants.HF_HUB_CACHE)) / "synseg" / repo.replace("/", "--") / commit
    folder.mkdir(parents=True, exist_ok=True)
    final, partial = folder / name, folder / f"{name}.incomplete"
    if final.is_file():
        return final
    resume = partial.stat().st_size if partial.is_file() else 0
    if meta.size is not None and resume > meta.size:
        partial.unlink()
        resume = 0
    if resume:
        log.info("resuming %s at %.1f MB", name, resume / 1e6)
    try:
        with partial.open("r+b" if resume else "wb") as handle:
            handle.seek(resume)
            http_get(meta.location, handle, resume_size=resume, headers=headers, expected_size=meta.size, displayed_filename=name)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise FetchError(f"no space left in {folder} while downloading {name}: free space and run the command again "
                             "(the download resumes)") from exc
        raise FetchError(f"download of {name} was interrupted ({type(exc).__name__}: {exc}); run the same command again "
                         f"to resume from {partial.stat().st_size / 1e6:.1f} MB") from exc
    except Exception as exc:  # httpx and huggingface_hub raise their own types for a cut connection
        raise FetchError(f"download of {name} was interrupted ({type(exc).__name__}: {exc}); run the same command again "
                         f"to resume from {partial.stat().st_size / 1e6:.1f} MB") from exc
    try:
        _verify(partial, meta.etag, meta.size)
    except FetchError:
        partial.unlink()
        raise
    os.replace(partial, final)
    return final


# ---------------------------------------------------------------- the commands

def fetch(name_or_repo: str, out: Path, revision: str | None = None, force: bool = False, method: str | None = None) -> Path:
    """Download a known source (see ``SOURCES``) or any CLIPSeg/CLIP repository id and write a checkpoint folder."""
    from synseg_core.weights import from_huggingface

    check_output(out, force)  # refuse before spending minutes on a download
    source = SOURCES.get(name_or_repo)
    repo = source.repo if source else name_or_repo
    if "/" not in repo:
        raise FetchError(f"{name_or_repo!r} is neither a known source ({', '.join(SOURCES)}) nor a repository id like ORG/NAME")
    method = method or (source.method if source else "synseg")
    files, commit = download_repository(repo, revision)
    weights = next(files[n] for n in WEIGHTS if n in files)
    model = from_huggingface(weights, method=method)
    provenance = {
        "repository": repo, "revision": commit, "requested_revision": revision or "main",
        "license": source.license if source else "see the repository",
        "files": {name: sha256(path) for name, path in sorted(files.items())},
    }
    return _save(model, out, force, provenance)


def _save(model: Any, out: Path, force: bool, provenance: dict[str, Any]) -> Path:
    import dataclasses
    import json

    model.config = dataclasses.replace(model.config, source=provenance)
    return write_checkpoint(model, out, force, metadata={"source": json.dumps(provenance, sort_keys=True)})


def convert(clipseg: Path | None, clip: Path | None, out: Path, force: bool = False, method: str = "synseg",
            preset: str | None = None) -> Path:
    """Files already on disk -> a checkpoint folder (see ``build_parser`` for the accepted combinations)."""
    from synseg_core.weights import clipseg_from_original, from_clip, from_huggingface

    check_output(out, force)
    files: dict[str, Path] = {}
    if clipseg is not None and clip is not None:
        if method != "synseg":
            raise ValueError(f"--method {method} uses only CLIP: give --clip alone")
        model = clipseg_from_original(clipseg, clip, preset)
        files = {"clipseg": clipseg, "clip": clip}
    elif clipseg is not None:
        model = from_huggingface(clipseg, method=method)
        files = {"clipseg": clipseg}
    elif clip is not None:
        if method == "synseg":
            raise ValueError("--clip alone has no decoder: add --clipseg rd64-uni.pth, or use --method naclip / clearclip")
        model = from_huggingface(clip, method) if clip.is_dir() else from_clip(clip, method, preset or "vit-b-16-openai")
        files = {"clip": clip}
    else:
        raise ValueError("give --clipseg and/or --clip")
    provenance = {"converted_from": {role: {"file": path.name, **_file_hashes(path)} for role, path in files.items()}}
    return _save(model, out, force, provenance)


def _file_hashes(path: Path) -> dict[str, Any]:
    if path.is_dir():
        return {"files": {p.name: sha256(p) for p in sorted(path.iterdir()) if p.is_file()}}
    return {"sha256": sha256(path)}


def list_sources() -> str:
    lines = [f"{'name':<22} {'repository':<30} {'license':<11} {'size':<8} description"]
    for name, s in SOURCES.items():
        lines.append(f"{name:<22} {s.repo:<30} {s.license:<11} {s.size:<8} {s.description}")
    lines.append("Any other CLIPSeg repository id (ORG/NAME) works with fetch too, e.g. CIDAS/clipseg-rd16.")
    return "\n".join(lines)


EPILOG = """\
What you get: a SynSeg checkpoint folder. CLIPSeg sources keep CLIPSeg's own inference settings in its
config.json (352x352 input, ImageNet mean/std, the prompt text as given, the raw text feature as the
condition), so its masks are CLIPSeg's; NACLIP/ClearCLIP folders hold only the CLIP towers.

Examples:
  python -m synseg_core.pretrained list
  python -m synseg_core.pretrained fetch clipseg-rd64-refined --out models/clipseg-rd64-refined
  python -m synseg_core.pretrained fetch CIDAS/clipseg-rd16 --out models/rd16 --revision main
  python -m synseg_core.pretrained convert --clipseg ~/Downloads/clipseg-rd64-refined/ --out models/clipseg
  python -m synseg_core.pretrained convert --clipseg rd64-uni.pth --clip ViT-B-16.pt --out models/rd64-uni
  python -m synseg_core.pretrained convert --clip ViT-B-16.pt --method naclip --out models/naclip
Then:
  python -m synseg_core.segment -c models/clipseg-rd64-refined photo.jpg -v "door,chair,floor"
  ros2 launch synseg_ros segment.launch.py image:=/camera/color/image_raw model_path:=models/clipseg-rd64-refined
Downloads happen only in 'fetch' (they need the network, so HF_HUB_OFFLINE must not be 1 for it);
a cut-off download resumes when you run the same command again.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m synseg_core.pretrained",
        description="Make a ready SynSeg checkpoint folder from published weights: CLIPSeg (the paper's starting point, "
        "a working open-vocabulary segmenter) or the training-free NACLIP/ClearCLIP on CLIP.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{list,fetch,convert}")
    commands.add_parser("list", help="the known sources, their licences and download sizes")
    fetch_cmd = commands.add_parser("fetch", help="download from the Hugging Face Hub and convert",
                                    description="Download NAME (see 'list') or any CLIPSeg repository id from the Hugging Face "
                                    "Hub and write a checkpoint folder. This is the only command that uses the network "
                                    "(HF_HUB_OFFLINE must not be 1 for it). Files are checked against the Hub's hashes and "
                                    "kept in $HF_HUB_CACHE/synseg/; a cut-off download resumes when you run the same "
                                    "command again.")
    fetch_cmd.add_argument("name", help="a name from 'list', or a repository id such as CIDAS/clipseg-rd64-refined")
    fetch_cmd.add_argument("--revision", help="branch, tag or commit (default: main); the commit used is recorded")
    conv = commands.add_parser("convert", help="convert weights files you already have",
                               description="Convert files on disk. CLIPSeg, Hugging Face layout: --clipseg FOLDER (or its "
                               "model.safetensors / pytorch_model.bin). CLIPSeg, original layout: --clipseg rd64-uni.pth "
                               "(or rd64-uni-refined.pth) --clip ViT-B-16.pt (OpenAI's file or an open_clip state dict). "
                               "NACLIP/ClearCLIP: --clip FILE (or a Hugging Face CLIP folder) --method naclip.")
    conv.add_argument("--clipseg", type=Path, help="CLIPSeg: a Hugging Face folder or weights file, or rd64-uni(-refined).pth")
    conv.add_argument("--clip", type=Path, help="CLIP weights: OpenAI ViT-B-16.pt, an open_clip state dict, or (with --method "
                      "naclip/clearclip) a Hugging Face CLIP folder such as openai/clip-vit-base-patch16's")
    conv.add_argument("--preset", help="architecture for original-layout / CLIP files (default: CLIPSeg's ViT-B/16 rd64; "
                      "for --clip alone vit-b-16-openai)")
    for sub in (fetch_cmd, conv):
        sub.add_argument("--out", "-o", type=Path, required=True, help="checkpoint folder to write")
        sub.add_argument("--force", action="store_true", help="replace an existing --out (only once the new one is complete)")
        sub.add_argument("--method", choices=METHODS, help="synseg (CLIPSeg as a SynSeg; default for CLIPSeg sources), or "
                         "the training-free naclip / clearclip on the CLIP towers")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "list":
        print(list_sources())
        return 0
    from synseg_core.checkpoint import CheckpointError

    try:
        if args.command == "fetch":
            out = fetch(args.name, args.out, args.revision, args.force, args.method)
        else:
            out = convert(args.clipseg, args.clip, args.out, args.force, args.method or "synseg", args.preset)
    except (FetchError, CheckpointError, FileExistsError, ValueError) as exc:
        log.error("error: %s", exc)
        return 2
    except OSError as exc:
        log.error("error: %s", exc.strerror or exc)
        return 2
    log.info("wrote %s\nrun it: python -m synseg_core.segment -c %s IMAGE -v \"door,chair\"", out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
