//! The harness of the `serve_*` tests: `lorafuse serve` started on a free 127.0.0.1 port with the
//! tiny fixture model and LoRAs, and a plain HTTP/1.1 client (std only, so the bytes on the wire
//! are exactly what a test sends, malformed ones included).
#![allow(dead_code)] // each test binary uses part of it

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd15-tiny")
}

pub fn model() -> PathBuf {
    fixtures().join("model-fp16.safetensors")
}

pub fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lorafuse-serve-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn xdg() -> String {
    std::env::var("XDG_RUNTIME_DIR").unwrap_or_else(|_| std::env::temp_dir().display().to_string())
}

/// A running `lorafuse serve`, killed when dropped.
pub struct Server {
    pub child: Child,
    pub addr: String,
    pub dir: PathBuf,
}

/// Keys every test config knows: `k-pro` (built-in pro tier), `k-long` (long jobs, one at a
/// time), `k-rate` (2 requests a minute), `k-small` (tiny images and few steps only), `k-load-a`
/// and `k-load-b` (no practical rate or concurrency limit).
pub const KEYS: &str = r#"
[tiers.long]
max_steps = 100000
concurrent_jobs = 1

[tiers.rate]
requests_per_minute = 2

[tiers.small]
max_pixels = 4096
max_steps = 19

[tiers.load]
concurrent_jobs = 1000
requests_per_minute = 100000

[keys]
"k-load-a" = "load"
"k-load-b" = "load"
"k-pro" = "pro"
"k-long" = "long"
"k-rate" = "rate"
"k-small" = "small"
"#;

impl Server {
    pub fn start(name: &str, server_section: &str) -> Server {
        Server::start_in(tmpdir(name), server_section, &fixtures().join("loras"))
    }

    pub fn start_in(dir: PathBuf, server_section: &str, lora_dir: &Path) -> Server {
        let cfg = dir.join("lorafuse.toml");
        std::fs::write(&cfg, format!("[server]\n{server_section}\n{KEYS}")).unwrap();
        let log = std::fs::File::create(dir.join("stderr.txt")).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_lorafuse"))
            .args(["serve", "-m"])
            .arg(model())
            .arg("--lora-dir")
            .arg(lora_dir)
            .args(["--port", "0", "--config"])
            .arg(&cfg)
            .arg("--outdir")
            .arg(dir.join("outputs"))
            .env("XDG_RUNTIME_DIR", xdg())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start lorafuse serve");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let addr = loop {
            match lines.next() {
                Some(Ok(l)) => {
                    if let Some(a) = l.split("listening on http://").nth(1) {
                        break a.trim().to_string();
                    }
                }
                _ => {
                    let _ = child.wait();
                    panic!(
                        "lorafuse serve did not start (no GPU adapter?):\n{}",
                        std::fs::read_to_string(dir.join("stderr.txt")).unwrap_or_default()
                    );
                }
            }
        };
        Server { child, addr, dir }
    }

    pub fn get(&self, path: &str) -> Resp {
        http(&self.addr, "GET", path, None, None)
    }

    pub fn post(&self, path: &str, key: Option<&str>, body: &Value) -> Resp {
        http(&self.addr, "POST", path, key, Some(body.to_string().as_bytes()))
    }

    pub fn txt2img(&self, key: Option<&str>, body: Value) -> Resp {
        self.post("/sdapi/v1/txt2img", key, &body)
    }

    pub fn progress(&self) -> Value {
        self.get("/sdapi/v1/progress").json()
    }

    /// Poll progress until `f` holds (a generous bound: lavapipe compiles kernels first).
    pub fn wait_progress(&self, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        let t0 = Instant::now();
        loop {
            let p = self.progress();
            if f(&p) {
                return p;
            }
            assert!(t0.elapsed() < Duration::from_secs(180), "timed out waiting for {what}: last progress {p}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.txt")).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("status {}: body is not JSON ({e}): {}", self.status, self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// A1111's error shape, with the status.
    pub fn assert_error(&self, status: u16, detail_has: &str) -> Value {
        let j = self.json();
        assert_eq!(self.status, status, "{j}");
        assert!(j["error"].is_string(), "{j}");
        let detail = j["detail"].as_str().unwrap_or_else(|| panic!("no detail: {j}"));
        assert!(detail.contains(detail_has), "detail {detail:?} lacks {detail_has:?}");
        j
    }
}

/// One HTTP/1.1 exchange on a fresh connection. The body is written from another thread so a
/// server that answers before reading it all (413) is still heard.
pub fn http(addr: &str, method: &str, path: &str, key: Option<&str>, body: Option<&[u8]>) -> Resp {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(600))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(k) = key {
        head.push_str(&format!("Authorization: Bearer {k}\r\n"));
    }
    if let Some(b) = body {
        head.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", b.len()));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    let writer = body.map(|b| {
        let mut w = s.try_clone().unwrap();
        let b = b.to_vec();
        std::thread::spawn(move || {
            let _ = w.write_all(&b);
        })
    });
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    if let Some(w) = writer {
        let _ = w.join();
    }
    parse_response(&raw)
}

pub fn parse_response(raw: &[u8]) -> Resp {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or_else(|| {
        panic!("no HTTP response: {:?}", String::from_utf8_lossy(raw));
    });
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|c| c.parse().ok()).expect("status line");
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect();
    let mut body = raw[split + 4..].to_vec();
    if headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked")) {
        let mut out = Vec::new();
        let mut rest = &body[..];
        while let Some(nl) = rest.windows(2).position(|w| w == b"\r\n") {
            let n = usize::from_str_radix(String::from_utf8_lossy(&rest[..nl]).trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            out.extend_from_slice(&rest[nl + 2..nl + 2 + n]);
            rest = &rest[nl + 2 + n + 2..];
        }
        body = out;
    }
    Resp { status, headers, body }
}

/// The info JSON string of a txt2img answer, parsed.
pub fn info(r: &Resp) -> Value {
    let j = r.json();
    assert_eq!(r.status, 200, "{j}");
    serde_json::from_str(j["info"].as_str().expect("info is a JSON string")).unwrap()
}

/// A base64 PNG: (width, height, pixels, parameters chunk).
pub fn decode_png(b64: &str) -> (u32, u32, Vec<u8>, String) {
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
    let dec = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut r = dec.read_info().unwrap();
    let params = r.info().uncompressed_latin1_text.iter().find(|t| t.keyword == "parameters").map(|t| t.text.clone());
    let mut buf = vec![0; r.output_buffer_size().unwrap()];
    let f = r.next_frame(&mut buf).unwrap();
    buf.truncate(f.buffer_size());
    (f.width, f.height, buf, params.expect("a parameters chunk"))
}

pub fn png_file(path: &Path) -> (Vec<u8>, String) {
    let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut r = dec.read_info().unwrap();
    let mut buf = vec![0; r.output_buffer_size().unwrap()];
    let f = r.next_frame(&mut buf).unwrap();
    buf.truncate(f.buffer_size());
    let params = lorafuse::pipeline::image::read_parameters(path).unwrap().unwrap();
    (buf, params)
}

pub fn small(extra: Value) -> Value {
    let mut b = json!({"prompt": "a lighthouse", "steps": 2, "width": 64, "height": 64});
    for (k, v) in extra.as_object().unwrap() {
        b[k] = v.clone();
    }
    b
}
