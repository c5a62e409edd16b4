"""Drive the web page of `lorafuse serve` in a headless Chromium through the DevTools protocol
(over --remote-debugging-pipe, so only the standard library is needed): load /, pick a LoRA, set
its weight, Generate, see the image; then a compare row over that LoRA's weight. Saves a
screenshot. Exits non-zero on any failure (tests/serve_clients.rs runs it).
Usage: chromium_page.py CHROMIUM URL SCREENSHOT.png PROFILE_DIR"""

import base64
import json
import os
import subprocess
import sys
import time

chromium, url, shot, profile = sys.argv[1:5]

# Chromium reads commands from fd 3 and writes replies to fd 4, each a JSON text ending in NUL.
to_chrome_r, to_chrome_w = os.pipe()
from_chrome_r, from_chrome_w = os.pipe()


def child_fds():
    # Through fresh copies: a pipe end that already is 3 or 4 would keep its close-on-exec flag.
    r, w = os.dup(to_chrome_r), os.dup(from_chrome_w)
    os.dup2(r, 3)
    os.dup2(w, 4)


proc = subprocess.Popen(
    [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--remote-debugging-pipe",
     f"--user-data-dir={profile}", "--window-size=1280,900", "about:blank"],
    # close_fds would run after preexec_fn and close the 3 and 4 it just made.
    preexec_fn=child_fds, close_fds=False,
    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
)
os.close(to_chrome_r)
os.close(from_chrome_w)
out = os.fdopen(to_chrome_w, "wb", buffering=0)
inp = os.fdopen(from_chrome_r, "rb", buffering=0)
buf = b""
next_id = 0


def send(method, params=None, session=None):
    global buf, next_id
    next_id += 1
    msg = {"id": next_id, "method": method, "params": params or {}}
    if session:
        msg["sessionId"] = session
    out.write(json.dumps(msg).encode() + b"\0")
    while True:
        while b"\0" not in buf:
            chunk = inp.read(1 << 16)
            if not chunk:
                raise SystemExit(f"chromium closed the pipe during {method}")
            buf += chunk
        raw, buf = buf.split(b"\0", 1)
        reply = json.loads(raw)
        if reply.get("id") == next_id:
            if "error" in reply:
                raise SystemExit(f"{method}: {reply['error']}")
            return reply["result"]


def js(expr, session):
    r = send("Runtime.evaluate", {"expression": expr, "awaitPromise": True, "returnByValue": True}, session)
    if "exceptionDetails" in r:
        raise SystemExit(f"page script failed: {expr}\n{r['exceptionDetails']}")
    return r["result"].get("value")


def wait_for(expr, session, what, seconds=180):
    t0 = time.time()
    while time.time() - t0 < seconds:
        v = js(expr, session)
        if v:
            return v
        time.sleep(0.2)
    err = js("document.getElementById('error').textContent", session)
    raise SystemExit(f"timed out waiting for {what} (page error: {err!r})")


try:
    target = send("Target.createTarget", {"url": "about:blank"})["targetId"]
    s = send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    send("Page.enable", session=s)
    send("Runtime.enable", session=s)
    send("Page.navigate", {"url": url}, s)
    wait_for("document.querySelectorAll('#loras .lora').length > 0 && document.getElementById('tier').textContent.startsWith('tier ')", s, "the LoRA list and tier")
    tier = js("document.getElementById('tier').textContent", s)
    assert "3 LoRAs" in tier, tier  # the anonymous (free) tier
    # Pick kohya_lora, set its weight to 0.6 as a user drags the slider, and a small fast image.
    picked = js("""(() => {
      const row = [...document.querySelectorAll('#loras .lora')].find(d => d.querySelector('span').textContent === 'kohya_lora');
      if (!row) return false;
      row.querySelector('button').click();
      const r = document.querySelector('#chosen input[type=range]');
      r.value = '0.6'; r.dispatchEvent(new Event('input'));
      for (const [id, v] of [['width', 64], ['height', 64], ['steps', 2], ['seed', 7]]) document.getElementById(id).value = v;
      return document.querySelector('#chosen span:nth-of-type(2)').textContent;
    })()""", s)
    assert picked == "0.6", picked
    assert js("document.getElementById('count').textContent", s) == "(1 of 3)"
    js("document.getElementById('generate').click()", s)
    caption = wait_for("""(() => {
      const f = document.querySelector('#gallery figure');
      const im = f && f.querySelector('img');
      return im && im.complete && im.naturalWidth === 64 ? f.querySelector('figcaption').textContent : null;
    })()""", s, "the generated image")
    assert "<lora:kohya_lora:0.6>" in caption and "Seed: 7," in caption and "Lora hashes:" in caption, caption
    # Compare view: the same seed at three weights of the LoRA, side by side.
    js("document.getElementById('cmp-lora').value = 'kohya_lora'; document.getElementById('cmp-weights').value = '0, 0.5, 1'; document.getElementById('compare-go').click()", s)
    labels = wait_for("""(() => {
      const figs = [...document.querySelectorAll('#compare figure')];
      const ready = figs.length === 3 && figs.every(f => f.querySelector('img').complete && f.querySelector('img').naturalWidth === 64);
      return ready && !document.getElementById('compare-go').disabled ? figs.map(f => f.querySelector('figcaption').textContent + ' | ' + f.title) : null;
    })()""", s, "the compare row")
    assert [l.split(" | ")[0] for l in labels] == ["kohya_lora = 0", "kohya_lora = 0.5", "kohya_lora = 1"], labels
    assert all("Seed: 7," in l for l in labels), labels
    distinct = js("new Set([...document.querySelectorAll('#compare img')].map(i => i.src)).size", s)
    assert distinct == 3, f"{distinct} distinct images for 3 weights"
    png = send("Page.captureScreenshot", {"format": "png"}, s)["data"]
    with open(shot, "wb") as f:
        f.write(base64.b64decode(png))
    print("chromium ok:", caption.splitlines()[0], "| compare:", [l.split(" | ")[0] for l in labels])
finally:
    try:
        send("Browser.close")
    except BaseException:
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
