"""Build the book as Read the Docs builds it, here, with no network during the build.

``make rtd`` (and CI, after ``make test``) runs ``python -m cookbook._book.readthedocs``. It follows
``.readthedocs.yaml`` step by step, in a folder of its own:

1. a copy of the checkout's files (those git tracks or would track), as Read the Docs clones them;
2. a fresh virtual environment with Read the Docs' first step, upgrading pip and setuptools (the
   newest setuptools is the one that refuses deprecated ``pyproject.toml`` fields), then the
   ``python.install`` entries: the requirements file, and the package itself with a *non-editable*
   ``pip install .``;
3. the ``build.jobs.post_install`` commands (``npm ci`` for MathJax);
4. the Sphinx build with Read the Docs' command line (``-T -b html -d _build/doctrees -D
   language=en``, and ``-W --keep-going`` for ``fail_on_warning``) and its environment variables
   (``READTHEDOCS``, ``READTHEDOCS_CANONICAL_URL``, ...), in an environment that holds nothing
   else, and, where Linux lets it (``unshare -n``), in a network namespace with no network at all.

Installing needs the package registries, as it does on Read the Docs; building needs nothing. Then it
checks what a reader gets: the package imported from the environment is the installed copy, the
pages name their canonical address, the kept Python inventory links out, and the build took so
long. It exits non-zero on any failure, saying which step failed.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "deep-learning-cookbook"
CANONICAL = f"https://{PROJECT}.readthedocs.io/en/latest/"


def rtd_environment(venv: Path, output: Path) -> dict[str, str]:
    """The variables that Read the Docs sets for a build, and only what a process needs beside them."""
    return {
        "PATH": f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "HOME": os.environ.get("HOME", "/tmp"),
        "LANG": "C.UTF-8",
        "READTHEDOCS": "True",
        "READTHEDOCS_PROJECT": PROJECT,
        "READTHEDOCS_LANGUAGE": "en",
        "READTHEDOCS_VERSION": "latest",
        "READTHEDOCS_VERSION_NAME": "latest",
        "READTHEDOCS_VERSION_TYPE": "branch",
        "READTHEDOCS_CANONICAL_URL": CANONICAL,
        "READTHEDOCS_OUTPUT": str(output),
        "READTHEDOCS_VIRTUALENV_PATH": str(venv),
    }


def steps(config: dict, checkout: Path, venv: Path, output: Path) -> list[tuple[str, list[str], bool]]:
    """The commands of a build, as ``(what, argv, needs_network)``, read from ``.readthedocs.yaml``."""
    python = str(venv / "bin" / "python")
    if config.get("version") != 2:
        raise ValueError(f".readthedocs.yaml: expected version: 2, found {config.get('version')!r}")
    tools = config.get("build", {}).get("tools", {})
    if str(tools.get("python")) != f"{sys.version_info.major}.{sys.version_info.minor}":
        raise ValueError(f".readthedocs.yaml asks for Python {tools.get('python')!r}; this is "
                         f"{sys.version_info.major}.{sys.version_info.minor}: run it with that Python")
    out = [("upgrade pip and setuptools", [python, "-m", "pip", "install", "--upgrade", "--no-cache-dir",
                                           "pip", "setuptools"], True)]
    for entry in config.get("python", {}).get("install", []):
        if "requirements" in entry:
            out.append((f"install {entry['requirements']}", [python, "-m", "pip", "install", "--upgrade",
                        "--no-cache-dir", "-r", entry["requirements"]], True))
        elif entry.get("method") == "pip":
            extras = f"[{','.join(entry['extra_requirements'])}]" if entry.get("extra_requirements") else ""
            out.append((f"install {entry['path']}{extras} (not editable)", [python, "-m", "pip", "install",
                        "--upgrade", "--upgrade-strategy", "only-if-needed", "--no-cache-dir",
                        f"{entry['path']}{extras}"], True))
        else:
            raise ValueError(f".readthedocs.yaml: an install entry this check does not know: {entry}")
    for command in config.get("build", {}).get("jobs", {}).get("post_install", []):
        out.append((f"post_install: {command}", ["sh", "-c", command], True))
    sphinx = config.get("sphinx", {})
    if sphinx.get("configuration") != "conf.py":
        raise ValueError(f".readthedocs.yaml: expected sphinx.configuration: conf.py, found {sphinx}")
    build = [python, "-m", "sphinx", "-T", "-b", "html", "-d", "_build/doctrees", "-D", "language=en"]
    if sphinx.get("fail_on_warning"):
        build[4:4] = ["-W", "--keep-going"]
    out.append(("sphinx build", build + [".", str(output / "html")], False))
    return out


def copy_checkout(source: Path, target: Path) -> None:
    """Copy the files git tracks or would track (not those it ignores), as a clone would hold them."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=source, capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, (n.decode() for n in listed)):
        if (source / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / name, target / name)


def offline(argv: list[str]) -> tuple[list[str], bool]:
    """``argv`` run in a network namespace of its own (no network), where this machine allows it."""
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-n", "true"], capture_output=True).returncode == 0:
        return [unshare, "-n", *argv], True
    return argv, False


def check_result(html: Path, venv: Path, checkout: Path) -> list[str]:
    """What is wrong with a finished build; an empty list if nothing."""
    problems = []
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import cookbook; print(cookbook.__file__)"],
                           cwd="/", capture_output=True, text=True)
    if where.returncode or "site-packages" not in where.stdout or str(checkout) in where.stdout:
        problems.append(f"the environment does not import an installed (non-editable) cookbook: {where.stdout or where.stderr}")
    page = html / "docs" / "reading.html"
    text = page.read_text() if page.is_file() else ""
    canonical = re.search(r'<link rel="canonical" href="([^"]+)"', text)
    if not canonical or canonical.group(1) != CANONICAL + "docs/reading.html":
        problems.append(f"docs/reading.html names no canonical address under {CANONICAL}: {canonical and canonical.group(1)}")
    if "https://docs.python.org/3.11/library/doctest.html" not in text:
        problems.append("docs/reading.html has no intersphinx link to Python's doctest page")
    recipes = list((html / "docs" / "chapters").rglob("*.html"))
    if len(recipes) < 100:
        problems.append(f"only {len(recipes)} chapter and recipe pages were built")
    return problems


def main(argv: list[str] | None = None) -> int:
    import yaml

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=ROOT / "_build" / "readthedocs")
    args = parser.parse_args(argv)
    workdir = args.workdir.resolve()
    shutil.rmtree(workdir, ignore_errors=True)
    checkout, venv, output = workdir / "checkout", workdir / "venv", workdir / "output"
    checkout.mkdir(parents=True)
    copy_checkout(ROOT, checkout)
    config = yaml.safe_load((checkout / ".readthedocs.yaml").read_text())
    plan = steps(config, checkout, venv, output)
    print(f"readthedocs: a fresh environment in {venv}", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = rtd_environment(venv, output)
    timings = {}
    for what, command, network in plan:
        if not network:
            command, isolated = offline(command)
            what += " (no network)" if isolated else " (the network could not be cut here: unshare -n refused)"
        print(f"readthedocs: {what}", flush=True)
        start = time.perf_counter()
        done = subprocess.run(command, cwd=checkout, env=env)
        timings[what] = time.perf_counter() - start
        if done.returncode:
            print(f"readthedocs: FAILED at '{what}' (exit status {done.returncode})")
            return 1
    problems = check_result(output / "html", venv, checkout)
    for what, seconds in timings.items():
        print(f"readthedocs: {seconds:7.1f} s  {what}")
    if problems:
        print("readthedocs: FAILED:\n  " + "\n  ".join(problems))
        return 1
    print(f"readthedocs: the book builds as on Read the Docs, with no warnings ({output / 'html'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
