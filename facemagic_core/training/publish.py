"""Publishing a trained generator on the Hugging Face Hub (``facemagic train --push-to-hub REPO``)."""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import BadInputError
from ..files import atomic_write_bytes
from ..generators.network import CONFIG_NAME, WEIGHTS_NAME, is_repo_id

logger = logging.getLogger(__name__)

MODEL_CARD = "README.md"


def write_model_card(folder: Path, *, step: int, num_faces: int, distilled_from: str | None) -> Path:
    """A short README.md for the checkpoint folder: what it is and how to load it."""
    origin = f"distilled from {distilled_from}" if distilled_from else "trained with FaceMagic's losses"
    text = (
        "---\nlibrary_name: facemagic\ntags:\n- face-swap\n- facemagic\n---\n\n"
        "# FaceMagic generator\n\n"
        f"A native FaceMagic style-delta generator ({CONFIG_NAME} + {WEIGHTS_NAME}, EMA weights), {origin}, "
        f"{step} steps on {num_faces} faces.\n\n"
        "Load it with `facemagic swap --generator OWNER/NAME ...`, the FaceMagic generator loader node, or "
        "`SwapGenerator.from_pretrained('OWNER/NAME')`.\n\n"
        "Identities must come from the recogniser named in config.json (`embedding_model`). "
        "Use face swapping only with the consent of the people shown.\n"
    )
    path = Path(folder) / MODEL_CARD
    atomic_write_bytes(path, text.encode("utf-8"))
    return path


def push_to_hub(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    commit_message: str = "Upload FaceMagic generator",
    token: str | None = None,
) -> str:
    """Create ``repo_id`` (if needed) and upload ``folder`` (config.json, model.safetensors, README.md).

    The Hub address is ``HF_ENDPOINT`` as read now; the token comes from ``token``, ``HF_TOKEN``
    or ``huggingface-cli login``. Returns the URL of the commit.
    """
    from huggingface_hub import HfApi

    from ..hub import hub_endpoint

    source = Path(folder)
    if not is_repo_id(repo_id):
        raise BadInputError(
            f"{repo_id!r} is not a Hub repository id",
            where="--push-to-hub",
            fix="use OWNER/NAME, e.g. me/facemagic-256",
        )
    missing = [name for name in (CONFIG_NAME, WEIGHTS_NAME) if not (source / name).is_file()]
    if missing:
        raise BadInputError(
            f"the checkpoint folder lacks {', '.join(missing)}", where=str(source), fix="train at least one step"
        )
    endpoint = hub_endpoint()
    api = HfApi(endpoint=endpoint, token=token)
    try:
        api.create_repo(repo_id, private=private, repo_type="model", exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(source),
            repo_type="model",
            commit_message=commit_message,
            allow_patterns=[CONFIG_NAME, WEIGHTS_NAME, MODEL_CARD],
        )
    except Exception as error:  # huggingface_hub raises HTTP, auth and network errors of many types
        raise BadInputError(
            f"uploading to the Hub failed ({type(error).__name__}: {error})",
            where=f"{endpoint}/{repo_id}",
            fix="log in with 'huggingface-cli login' or set HF_TOKEN (a token with write access), check the repo id",
        ) from error
    url = str(getattr(commit, "commit_url", commit))
    logger.info("uploaded %s to %s", source, url)
    return url
