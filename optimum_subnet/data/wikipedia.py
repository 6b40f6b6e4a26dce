"""A real English Wikipedia extract that ships inside a PyPI wheel, usable with no hub access.

``gensim==4.3.3`` carries ``gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2``:
a MediaWiki XML dump of 106 articles (plus redirects), about 3.4 MB of text once the markup is
stripped. This is **not WikiText-2** (a different, smaller, unfiltered sample of Wikipedia, and a
different tokenizer than the papers'), so perplexities measured on it are comparable between
methods here but not to published WikiText-2 numbers.

We parse the dump, strip markup with ``mwparserfromhell`` (references, files and categories
removed), split it deterministically at the article level (an article's SHA-1 of its title decides
its side, so the split never changes and no article leaks between the sides), write the two sides as
JSON Lines into the project cache, and load them through ``datasets``.
"""

from __future__ import annotations

import bz2
import hashlib
import importlib.util
import json
import logging
import os
import zipfile
from pathlib import Path
from xml.etree import ElementTree

from optimum_subnet.core.errors import DataError
from optimum_subnet.core.files import cache_dir

logger = logging.getLogger(__name__)

NAME = "enwiki-extract"
DESCRIPTION = (
    "English Wikipedia extract (106 articles) from gensim 4.3.3's test data; a WikiText-2 substitute, not WikiText-2"
)
GENSIM_MEMBER = "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
INSTALL_HINT = "pip install --no-deps gensim==4.3.3"
#: One article in five goes to the held-out evaluation side.
EVALUATION_SHARE = 0.2
_FORMAT = "v1"


def locate_dump() -> Path | bytes:
    """The bz2 dump: from the installed gensim package (located without importing it), or from a
    gensim wheel in the cache (``$OPTIMUM_SUBNET_CACHE/wheels``)."""
    spec = importlib.util.find_spec("gensim")
    if spec is not None and spec.submodule_search_locations:
        for root in spec.submodule_search_locations:
            path = Path(root).parent / GENSIM_MEMBER
            if path.is_file():
                return path
    for wheel in sorted((cache_dir() / "wheels").glob("gensim-4.3.3-*.whl")):
        with zipfile.ZipFile(wheel) as zf:
            if GENSIM_MEMBER in zf.namelist():
                return zf.read(GENSIM_MEMBER)
    raise DataError(f"the built-in dataset {NAME!r} needs gensim's test data: {INSTALL_HINT}")


def clean_wikitext(wikitext: str) -> str:
    """Plain text of an article: references, files, images and categories removed, markup stripped."""
    import mwparserfromhell

    code = mwparserfromhell.parse(wikitext)
    for tag in code.filter_tags(recursive=False, matches=lambda n: str(n.tag).lower() in ("ref", "gallery")):
        try:
            code.remove(tag)
        except ValueError:  # already removed with a parent
            pass
    for link in code.filter_wikilinks():
        title = str(link.title).strip().lower()
        if title.startswith(("category:", "file:", "image:")):
            try:
                code.remove(link)
            except ValueError:
                pass
    text = code.strip_code(normalize=True, collapse=True)
    lines = [" ".join(line.split()) for line in text.splitlines()]
    return "\n".join(line for line in lines if line)


def parse_dump(data: Path | bytes) -> list[dict[str, str]]:
    """Articles (namespace 0, no redirects) as ``{"title", "text"}`` in dump order."""
    import io

    stream = bz2.open(data) if isinstance(data, Path) else bz2.open(io.BytesIO(data))
    articles = []
    with stream:
        for _, element in ElementTree.iterparse(stream):
            if not element.tag.endswith("}page"):
                continue
            ns = element.find("{*}ns")
            if element.find("{*}redirect") is None and ns is not None and ns.text == "0":
                title = element.find("{*}title").text or ""
                text = clean_wikitext(element.find("{*}revision/{*}text").text or "")
                if text:
                    articles.append({"title": title, "text": text})
            element.clear()
    return articles


def split_of(title: str) -> str:
    """Deterministic article-level split: the title's SHA-1 decides."""
    bucket = int(hashlib.sha1(title.encode("utf-8")).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "evaluation" if bucket < EVALUATION_SHARE else "calibration"


def prepared_files() -> dict[str, Path]:
    """JSON Lines files of both sides, built once into the cache."""
    folder = cache_dir() / "datasets" / f"{NAME}-{_FORMAT}"
    files = {split: folder / f"{split}.jsonl" for split in ("calibration", "evaluation")}
    if all(f.is_file() for f in files.values()):
        return files
    logger.info("Preparing the %s dataset (once; cached in %s)", NAME, folder)
    articles = parse_dump(locate_dump())
    folder.mkdir(parents=True, exist_ok=True)
    for split, path in files.items():
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        with open(tmp, "w", encoding="utf-8") as f:
            for article in articles:
                if split_of(article["title"]) == split:
                    f.write(json.dumps(article, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    return files


def load_split(split: str) -> list[dict[str, str]]:
    """The articles (``{"title", "text"}``) of ``split`` in {calibration, evaluation}.

    Read with ``json`` rather than ``datasets``: the file is ours (one article per line) and small, and this
    keeps the built-in data usable where only the pure-Python stack is installed (the GPU machine)."""
    if split not in ("calibration", "evaluation"):
        raise DataError(f"{NAME} has splits 'calibration' and 'evaluation', not {split!r}")
    with open(prepared_files()[split], encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
