"""A weight source's file: from its library's cache, else downloaded by that library.

torchvision's files are fetched with torch.hub's downloader into torch.hub's cache (its
file names carry a hash prefix, which the download checks), timm's with
`huggingface_hub.hf_hub_download` into the hub cache. With no network, or downloads turned
off (`CNNBUILDER_OFFLINE=1`, `HF_HUB_OFFLINE=1`), the error names the file, its URL and the
place to put it.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from cnnbuilder.errors import WeightsError
from cnnbuilder.model.pretrained.sources import WeightSource, offline

logger = logging.getLogger("cnnbuilder")
# torch.hub's check: the first hex digits of the file's SHA-256 after the last '-'.
_HASH_PREFIX = re.compile(r"-([a-f0-9]*)\.")


def locate(source: WeightSource) -> Path:
    """The cached file of `source`, downloading it first when it is not cached.

    Raises:
        WeightsError: not cached and not downloadable (offline, no network, or the
            downloading library missing); the message says where to put the file.
    """
    path = source.cache_path()
    if path.is_file():
        return path
    where = (f"{path.parent.parent.parent / 'snapshots' / '<revision>'}/ (a Hugging Face hub "
             "cache: `huggingface-cli download " f"{source.meta.get('hf_hub_id')}` fills it)"
             if source.hub == "timm" else f"{path.parent}/")
    advice = (f"Download {source.file_name} from {source.url} and put it in {where} "
              "(cnnbuilder help pretrained: filling the caches offline).")
    if offline():
        raise WeightsError(f"the {source.name} weights are not cached and downloads are off "
                           f"(CNNBUILDER_OFFLINE / HF_HUB_OFFLINE). {advice}")
    try:
        return _download(source, path)
    except WeightsError:
        raise
    except Exception as exc:  # noqa: BLE001 - URLError, HTTP errors, timeouts, proxies
        raise WeightsError(f"the {source.name} weights are not cached and could not be "
                           f"downloaded ({type(exc).__name__}: {exc}). {advice}") from None


def _download(source: WeightSource, path: Path) -> Path:
    """Fetch the file with its library's downloader; the cached path."""
    logger.info("downloading %s from %s", source.name, source.url)
    if source.hub == "timm":
        try:
            from huggingface_hub import hf_hub_download
        except ImportError:
            raise WeightsError(f"downloading {source.name} needs huggingface_hub (pip install "
                               f"huggingface_hub), or put {source.file_name} from "
                               f"{source.url} in the Hugging Face hub cache.") from None
        return Path(hf_hub_download(source.meta["hf_hub_id"], source.file_name))
    try:
        from torch.hub import download_url_to_file
    except ImportError:
        raise WeightsError(f"the {source.name} weights are a PyTorch file: downloading and "
                           "reading it needs PyTorch (pip install 'cnnbuilder[torch]'). Or put "
                           f"{source.file_name} from {source.url} in {path.parent}/ and install "
                           "it then.") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    match = _HASH_PREFIX.search(source.file_name)
    # The library writes a temporary file and moves it into place: no half file is left.
    download_url_to_file(source.url, str(path), match[1] if match else None, progress=False)
    return path


__all__ = ["locate"]
