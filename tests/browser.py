"""A real headless browser for the integration tests: Debian's chromium driven by selenium through
Debian's chromedriver (Playwright's and Selenium Manager's own browser downloads cannot be reached
from these machines). Installs the two packages with apt when they are missing."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PACKAGES = ["chromium", "chromium-driver"]
SCREENSHOTS = Path(os.environ.get("VDI_SCREENSHOTS", Path(__file__).resolve().parents[1] / "runs" / "screenshots"))


def ensure_chromium() -> None:
    """apt-get install chromium + chromium-driver unless both are there (root, or sudo without a
    password); a failure names what to install."""
    if Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists():
        return
    prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = [*prefix, "apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]
    done = subprocess.run(install, capture_output=True, text=True, env=env, timeout=900)
    if done.returncode != 0:  # an old package list: update it once and retry
        subprocess.run([*prefix, "apt-get", "update", "-q"], capture_output=True, env=env, timeout=600)
        done = subprocess.run(install, capture_output=True, text=True, env=env, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"could not install {' '.join(PACKAGES)} with apt-get: {done.stderr[-500:]}")


def chrome(width: int = 1500, height: int = 1000):
    """A headless Chromium WebDriver (the caller quits it)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    ensure_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument(f"--window-size={width},{height}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(120)
    return driver


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, process: subprocess.Popen, timeout: float = 180.0) -> None:
    """Until ``url`` answers (or the server process ends, or ``timeout`` passes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(1.0)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")


def wait_for(driver, condition, timeout: float = 90.0, what: str = "the page"):
    """Poll ``condition(driver)`` until it returns something truthy; a timeout says what was awaited
    and saves the page's screenshot beside the others."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = condition(driver)
        except Exception:  # elements that are not there yet / went stale while the page renders
            found = None
        if found:
            return found
        time.sleep(0.5)
    screenshot(driver, "timeout.png")
    raise TimeoutError(f"{what} did not appear within {timeout:.0f} s (screenshot: {SCREENSHOTS / 'timeout.png'})")


def screenshot(driver, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / name
    driver.save_screenshot(str(path))
    return path


def stop(process: subprocess.Popen) -> None:
    """End a server started with start_new_session=True, its children included."""
    if process.poll() is None:
        os.killpg(process.pid, 15)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()


def which_mlflow(python: str) -> list[str]:
    """``mlflow`` of this venv (beside its python)."""
    beside = Path(python).parent / "mlflow"
    return [str(beside)] if beside.exists() else [shutil.which("mlflow") or "mlflow"]
