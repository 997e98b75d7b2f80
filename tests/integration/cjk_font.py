"""A Chinese font for browser screenshots.

Debian's chromium brings no CJK font, so a page in zh-CN renders as empty
boxes in a screenshot (the text in the DOM is right either way: tests assert
on it, not on pixels). ensure_cjk_font() installs Debian's fonts-wqy-microhei
(about 5 MB, 3 s) when fontconfig knows no font for Chinese and we are root,
the way chromium.ensure_installed() installs the browser; otherwise it says
so and returns False, and the test goes on with boxes in its screenshots.
"""
import os
import subprocess

PACKAGE = "fonts-wqy-microhei"


def has_cjk_font():
    try:
        r = subprocess.run(["fc-list", ":lang=zh", "family"], capture_output=True, text=True,
                           timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0 and r.stdout.strip() != ""


def ensure_cjk_font(log=print, timeout=300):
    """True when a font for Chinese is installed (now or before)."""
    if has_cjk_font():
        return True
    if os.geteuid() != 0:
        log(f"no Chinese font and not root: zh-CN screenshots will show boxes "
            f"(apt-get install {PACKAGE})")
        return False
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "-o", f"DPkg::Lock::Timeout={int(timeout)}", "install", "-y",
           "--no-install-recommends", PACKAGE]
    try:
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        log(f"apt-get install {PACKAGE} timed out: zh-CN screenshots will show boxes")
        return False
    if r.returncode != 0 or not has_cjk_font():
        log(f"apt-get install {PACKAGE} failed ({r.returncode}): zh-CN screenshots will "
            f"show boxes\n{r.stderr[-1000:]}")
        return False
    log(f"installed {PACKAGE} for zh-CN screenshots")
    return True
