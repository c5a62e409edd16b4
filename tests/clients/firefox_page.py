"""Drive the web page of `lorafuse serve` in a headless Firefox through Marionette (its own
length-prefixed JSON protocol over TCP, so only the standard library is needed and no geckodriver):
load /, pick a LoRA, set its weight, Generate, see the image; then a compare row over that LoRA's
weight. Saves a screenshot. Exits non-zero on any failure (tests/serve_clients.rs runs it).
Usage: firefox_page.py FIREFOX URL SCREENSHOT.png PROFILE_DIR"""

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

firefox, url, shot, profile = sys.argv[1:5]

shutil.rmtree(profile, ignore_errors=True)
os.makedirs(profile)
# A fresh profile, so nothing of a person's Firefox (or an earlier run) changes what the page sees.
# Port 0 lets Firefox take a free port itself and write it to MarionetteActivePort: no window
# between picking a port and binding it in which another process could take it.
prefs = {
    "marionette.port": 0,
    "browser.shell.checkDefaultBrowser": False,
    "browser.startup.page": 0,
    "browser.startup.homepage": "about:blank",
    "browser.startup.homepage_override.mstone": "ignore",
    "startup.homepage_welcome_url": "about:blank",
    "startup.homepage_welcome_url.additional": "",
    "browser.aboutwelcome.enabled": False,
    "trailhead.firstrun.didSeeAboutWelcome": True,
    "datareporting.policy.firstRunURL": "",
    "datareporting.policy.dataSubmissionEnabled": False,
    "datareporting.healthreport.uploadEnabled": False,
    "toolkit.telemetry.enabled": False,
    "toolkit.telemetry.unified": False,
    "toolkit.telemetry.server": "",
    "app.update.disabledForTesting": True,
    "app.update.auto": False,
    "app.normandy.enabled": False,
    "extensions.update.enabled": False,
    "browser.newtabpage.enabled": False,
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "browser.sessionstore.resume_from_crash": False,
    "toolkit.startup.max_resumed_crashes": -1,
}
with open(os.path.join(profile, "user.js"), "w") as f:
    for k, v in prefs.items():
        f.write(f"user_pref({json.dumps(k)}, {json.dumps(v)});\n")

log_path = profile.rstrip("/") + ".log"
log = open(log_path, "wb")
proc = subprocess.Popen(
    [firefox, "--headless", "--marionette", "--no-remote", "--profile", profile],
    stdout=log, stderr=subprocess.STDOUT,
    # Its own process group: content and GPU processes go with it when it is killed at the end.
    start_new_session=True,
    env={**os.environ, "MOZ_CRASHREPORTER_DISABLE": "1"},
)


def fail(msg):
    log.flush()
    with open(log_path, "rb") as f:
        tail = f.read()[-3000:].decode(errors="replace")
    raise SystemExit(f"{msg}\n--- firefox output ({log_path}) ---\n{tail}")


sock = None
buf = b""
next_id = 0


def read_msg():
    global buf
    while True:
        if b":" in buf:
            n, rest = buf.split(b":", 1)
            n = int(n)
            if len(rest) >= n:
                buf = rest[n:]
                return json.loads(rest[:n])
        chunk = sock.recv(1 << 16)
        if not chunk:
            fail("firefox closed the Marionette connection")
        buf += chunk


def send(name, params=None):
    global next_id
    next_id += 1
    body = json.dumps([0, next_id, name, params or {}]).encode()
    sock.sendall(str(len(body)).encode() + b":" + body)
    while True:
        msg = read_msg()
        # Replies are [1, id, error, result]; anything else (events) is not ours to wait for.
        if msg[0] == 1 and msg[1] == next_id:
            if msg[2]:
                raise SystemExit(f"{name}: {msg[2].get('error')}: {msg[2].get('message')}")
            return msg[3]


def js(body):
    """Runs `body` as a function body in the page; a returned promise is awaited (WebDriver)."""
    return send("WebDriver:ExecuteScript", {"script": body, "args": []}).get("value")


def wait_for(expr, what, seconds=180):
    t0 = time.time()
    while time.time() - t0 < seconds:
        v = js(f"return {expr};")
        if v:
            return v
        time.sleep(0.2)
    err = js("return document.getElementById('error').textContent;")
    raise SystemExit(f"timed out waiting for {what} (page error: {err!r})")


try:
    # A first start of a profile can be slow (it is created then); the file appears once the
    # server listens.
    port_file = os.path.join(profile, "MarionetteActivePort")
    t0 = time.time()
    while True:
        if proc.poll() is not None:
            fail(f"{firefox} exited with {proc.returncode} before Marionette listened")
        if os.path.exists(port_file):
            text = open(port_file).read().strip()
            if text:
                port = int(text)
                break
        if time.time() - t0 > 90:
            fail("Marionette did not start within 90 s")
        time.sleep(0.1)
    sock = socket.create_connection(("127.0.0.1", port), timeout=300)
    hello = read_msg()
    if hello.get("marionetteProtocol") != 3:
        fail(f"unexpected Marionette greeting {hello}")
    send("WebDriver:NewSession", {"strictFileInteractability": True})
    send("WebDriver:SetWindowRect", {"width": 1280, "height": 900})
    send("WebDriver:Navigate", {"url": url})
    wait_for("document.querySelectorAll('#loras .lora').length > 0 && document.getElementById('tier').textContent.startsWith('tier ')", "the LoRA list and tier")
    # Script errors the page does not show itself (a handler that throws in Firefox only) would
    # otherwise pass unseen as long as the DOM ends up right.
    js("window.__errors = []; addEventListener('error', e => __errors.push(String(e.message))); addEventListener('unhandledrejection', e => __errors.push(String(e.reason)));")
    tier = js("return document.getElementById('tier').textContent;")
    assert "3 LoRAs" in tier, tier  # the anonymous (free) tier
    # Pick kohya_lora, set its weight to 0.6 as a user drags the slider, and a small fast image.
    picked = js("""
      const row = [...document.querySelectorAll('#loras .lora')].find(d => d.querySelector('span').textContent === 'kohya_lora');
      if (!row) return false;
      row.querySelector('button').click();
      const r = document.querySelector('#chosen input[type=range]');
      r.value = '0.6'; r.dispatchEvent(new Event('input'));
      for (const [id, v] of [['width', 64], ['height', 64], ['steps', 2], ['seed', 7]]) document.getElementById(id).value = v;
      return document.querySelector('#chosen span:nth-of-type(2)').textContent;""")
    assert picked == "0.6", picked
    count = js("return document.getElementById('count').textContent;")
    assert count == "(1 of 3)", count
    js("document.getElementById('generate').click();")
    caption = wait_for("""(() => {
      const f = document.querySelector('#gallery figure');
      const im = f && f.querySelector('img');
      return im && im.complete && im.naturalWidth === 64 ? f.querySelector('figcaption').textContent : null;
    })()""", "the generated image")
    assert "<lora:kohya_lora:0.6>" in caption and "Seed: 7," in caption and "Lora hashes:" in caption, caption
    # Compare view: the same seed at three weights of the LoRA, side by side.
    js("document.getElementById('cmp-lora').value = 'kohya_lora'; document.getElementById('cmp-weights').value = '0, 0.5, 1'; document.getElementById('compare-go').click();")
    labels = wait_for("""(() => {
      const figs = [...document.querySelectorAll('#compare figure')];
      const ready = figs.length === 3 && figs.every(f => f.querySelector('img').complete && f.querySelector('img').naturalWidth === 64);
      return ready && !document.getElementById('compare-go').disabled ? figs.map(f => f.querySelector('figcaption').textContent + ' | ' + f.title) : null;
    })()""", "the compare row")
    assert [l.split(" | ")[0] for l in labels] == ["kohya_lora = 0", "kohya_lora = 0.5", "kohya_lora = 1"], labels
    assert all("Seed: 7," in l for l in labels), labels
    distinct = js("return new Set([...document.querySelectorAll('#compare img')].map(i => i.src)).size;")
    assert distinct == 3, f"{distinct} distinct images for 3 weights"
    errors = js("return window.__errors;")
    assert errors == [], f"script errors on the page: {errors}"
    # The viewport, as the Chromium check saves it, so the two screenshots can be put side by side.
    png = send("WebDriver:TakeScreenshot", {"full": False, "hash": False})["value"]
    with open(shot, "wb") as f:
        f.write(base64.b64decode(png))
    print("firefox ok:", caption.splitlines()[0], "| compare:", [l.split(" | ")[0] for l in labels])
except AssertionError as e:
    raise SystemExit(f"check failed: {e}")
finally:
    if sock is not None:
        try:
            sock.settimeout(10)
            send("Marionette:Quit", {"flags": ["eForceQuit"]})
        except BaseException:
            pass
        sock.close()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    # Whatever is left of the group (a hung parent, a lingering content process) goes too.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    log.close()
