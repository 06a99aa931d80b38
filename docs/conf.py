"""Sphinx configuration of the dask-adaptive-chunking documentation site.

Build it from the repository root, warnings as errors::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

The pages are Markdown (MyST) except the API reference, whose docstrings are NumPy
style. The module is imported from this working tree, never from an installed copy
that may be older: the same meta-path finder the tests use resolves
``dask.array.adaptive_chunking`` and ``dask.array._adaptive_chunking`` to the
repository and leaves the rest of Dask to the installed package.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "tools" / "overlay"))

import dask_overlay_dev  # noqa: E402

dask_overlay_dev.install()

import dask.array.adaptive_chunking as adaptive_chunking  # noqa: E402

if not adaptive_chunking.__file__.startswith(str(ROOT)):
    raise RuntimeError(f"documenting {adaptive_chunking.__file__}, not this repository's copy")

# -- Project -------------------------------------------------------------------------

project = "dask-adaptive-chunking"
author = "dask-adaptive-chunking developers"
copyright = "dask-adaptive-chunking developers"
release = re.search(r'^version = "(.+)"$', (ROOT / "pyproject.toml").read_text(), re.M)[1]

# -- General -------------------------------------------------------------------------

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "numpydoc",
    "sphinx.ext.viewcode",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
# `_generated` holds the pictures and `graph.md`, a part of a page, not a page itself
exclude_patterns = ["_build", "_generated", "Thumbs.db", ".DS_Store"]

# MyST: `[text](page.md#a-heading)` links resolve to the heading's anchor; tables,
# `$` and the like stay plain Markdown.
myst_heading_anchors = 4
myst_enable_extensions = ["colon_fence"]

# autodoc and numpydoc: members are listed where the API page asks for them, and
# numpydoc does not generate a second, autosummary-style list of them.
autodoc_member_order = "bysource"
autodoc_typehints = "none"
numpydoc_show_class_members = False
numpydoc_xref_param_type = False


# -- HTML ----------------------------------------------------------------------------

html_theme = "pydata_sphinx_theme"
html_title = "dask-adaptive-chunking"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
}
html_static_path: list[str] = []
html_show_sourcelink = False


# -- Links to benchmark result files -------------------------------------------------
#
# The Markdown pages link to `../benchmarks/results/<name>.md`, the files the
# benchmarks write, so that the links work when the pages are read in the repository.
# Those files are outside this folder, so they are not pages of the site: the
# `benchmark-results` page includes them, each after a label `results-<name>`, and
# the links are pointed there (before MyST's own resolver, which would warn). A link to
# a result file that page does not include is left to MyST, and fails the build.

RESULTS = (ROOT / "benchmarks" / "results").resolve()


def make_images(app) -> None:
    """Draw the pictures the pages show (``docs/make_images.py``: the engine's
    ``plot_profile`` and ``visualize`` of a real compute) into ``docs/_generated``,
    before any page is read; a few seconds. Without Graphviz's ``dot`` the graph is
    left out and its page shows a note instead, so the site builds anywhere."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_images", HERE / "make_images.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(HERE / "_generated")


def setup(app):
    app.connect("builder-inited", make_images)
    from sphinx import addnodes
    from sphinx.transforms.post_transforms import SphinxPostTransform
    from sphinx.util.nodes import make_refnode

    class LinkResults(SphinxPostTransform):
        default_priority = 5  # MyST's resolver runs at 9

        def run(self, **kwargs) -> None:
            labels = self.env.domaindata["std"]["labels"]
            for node in list(self.document.findall(addnodes.pending_xref)):
                if node.get("reftype") != "myst" or node.get("refdomain") != "doc":
                    continue
                # a docname: absolute (MyST 5) or relative to this folder (MyST 4)
                target = Path(self.env.srcdir, node["reftarget"]).resolve()
                label = labels.get(f"results-{target.name}")
                if target.parent != RESULTS or label is None:
                    continue
                node.replace_self(make_refnode(
                    self.app.builder, node.get("refdoc", self.env.docname), label[0],
                    label[1], node[0].deepcopy(),
                ))

    app.add_post_transform(LinkResults)
