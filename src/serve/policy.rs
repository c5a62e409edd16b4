//! The platform's policy, from a TOML file: API keys map to tiers, and a tier bounds what one
//! request may ask for (LoRAs, pixels, steps, images) and how often and how many at once a key
//! may ask. Checked in the HTTP handler, before anything reaches the queue, so a refused request
//! costs no GPU time.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

const OP: &str = "config";

/// Limits of one tier.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Tier {
    /// LoRAs in one image (prompt tags).
    pub max_loras: usize,
    /// width × height of one image.
    pub max_pixels: usize,
    pub max_steps: usize,
    /// Images in one request: batch_size × n_iter.
    pub max_batch: usize,
    pub requests_per_minute: usize,
    /// Requests of one key queued or running at once.
    pub concurrent_jobs: usize,
}

impl Default for Tier {
    fn default() -> Tier {
        Tier::free()
    }
}

impl Tier {
    /// The anonymous tier: 3 LoRAs per image, as large platforms give free users.
    pub fn free() -> Tier {
        Tier {
            max_loras: 3,
            max_pixels: 1024 * 1024,
            max_steps: 100,
            max_batch: 4,
            requests_per_minute: 60,
            concurrent_jobs: 2,
        }
    }

    /// Paying users: 6 LoRAs per image.
    pub fn pro() -> Tier {
        Tier {
            max_loras: 6,
            max_pixels: 2048 * 2048,
            max_steps: 150,
            max_batch: 16,
            requests_per_minute: 600,
            concurrent_jobs: 8,
        }
    }
}

/// Server-wide settings.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Jobs waiting (not counting the running one) before new ones get 503.
    pub queue_size: usize,
    /// A request not answered in this time is cancelled (queued or running) and gets 504.
    pub request_timeout_s: f64,
    /// The tier of requests without an API key.
    pub anonymous_tier: String,
    /// Largest request body; longer prompts get 413.
    pub max_body_bytes: usize,
    /// Time a client has to send its body (slow-loris clients get 408).
    pub body_timeout_s: f64,
    /// Memory budget of the parsed-LoRA cache, in MiB (least recently used files dropped past it).
    pub lora_cache_mib: f64,
}

impl Default for ServerSettings {
    fn default() -> ServerSettings {
        ServerSettings {
            queue_size: 32,
            request_timeout_s: 600.0,
            anonymous_tier: "free".into(),
            max_body_bytes: 64 << 10,
            body_timeout_s: 20.0,
            lora_cache_mib: 2048.0,
        }
    }
}

/// The whole `lorafuse.toml`:
///
/// ```toml
/// [server]
/// queue_size = 32
/// request_timeout_s = 600
/// lora_cache_mib = 2048
/// anonymous_tier = "free"
///
/// [tiers.free]
/// max_loras = 3
///
/// [tiers.pro]
/// max_loras = 6
/// requests_per_minute = 600
///
/// [keys]
/// "sk-alice" = "pro"
/// ```
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerSettings,
    pub tiers: BTreeMap<String, Tier>,
    /// API key → tier name.
    pub keys: BTreeMap<String, String>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            server: ServerSettings::default(),
            tiers: [("free".to_string(), Tier::free()), ("pro".to_string(), Tier::pro())].into(),
            keys: BTreeMap::new(),
        }
    }
}

impl Config {
    /// Parse and check a config text: every key's tier and the anonymous tier exist. Tiers the
    /// file does not define keep the built-in `free` and `pro`.
    pub fn parse(text: &str) -> Result<Config> {
        let mut c: Config = toml::from_str(text).map_err(|e| Error::invalid(OP, e.to_string()))?;
        for (name, t) in Config::default().tiers {
            c.tiers.entry(name).or_insert(t);
        }
        c.check()?;
        Ok(c)
    }

    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::invalid(OP, format!("cannot read {}: {e}", path.display())))?;
        Config::parse(&text).map_err(|e| match e {
            Error::Invalid { msg, .. } => Error::invalid(OP, format!("{}: {msg}", path.display())),
            other => other,
        })
    }

    fn check(&self) -> Result<()> {
        if !self.tiers.contains_key(&self.server.anonymous_tier) {
            return Err(Error::invalid(OP, format!("anonymous_tier {:?} is not a tier", self.server.anonymous_tier)));
        }
        for (key, tier) in &self.keys {
            if !self.tiers.contains_key(tier) {
                return Err(Error::invalid(OP, format!("key {}: tier {tier:?} is not defined", redact(key))));
            }
        }
        if self.server.queue_size == 0 {
            return Err(Error::invalid(OP, "server.queue_size must be at least 1"));
        }
        for (name, v) in
            [("request_timeout_s", self.server.request_timeout_s), ("body_timeout_s", self.server.body_timeout_s)]
        {
            if !(v > 0.0 && v < 1e9) {
                return Err(Error::invalid(OP, format!("server.{name} must be a positive number of seconds")));
            }
        }
        Ok(())
    }

    /// The caller behind an `Authorization` header value: `None` = no header (anonymous).
    /// An unknown key is an error, not anonymous, so a typo is not silently downgraded.
    pub fn caller(&self, authorization: Option<&str>) -> std::result::Result<Caller, String> {
        let Some(h) = authorization else {
            let tier = self.server.anonymous_tier.clone();
            return Ok(Caller { key: "anonymous".into(), limits: self.tiers[&tier].clone(), tier });
        };
        let token = h.strip_prefix("Bearer ").map(str::trim).ok_or("Authorization must be `Bearer <API key>`")?;
        match self.keys.get(token) {
            Some(tier) => Ok(Caller { key: key_id(token), tier: tier.clone(), limits: self.tiers[tier].clone() }),
            None => Err(format!("unknown API key {}", redact(token))),
        }
    }
}

/// The name a key is accounted and logged under: a digest, so logs never hold the secret.
fn key_id(token: &str) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(token.as_bytes());
    format!("key-{}", d.iter().take(6).map(|b| format!("{b:02x}")).collect::<String>())
}

/// A key as logs and messages may show it.
pub fn redact(key: &str) -> String {
    let head: String = key.chars().take(4).collect();
    format!("{head}…")
}

/// Who is asking, resolved from the request's key.
#[derive(Clone, Debug)]
pub struct Caller {
    /// Fairness, rate and concurrency are accounted per this string.
    pub key: String,
    pub tier: String,
    pub limits: Tier,
}

/// What a request asks for, measured against a tier.
pub struct Ask {
    pub loras: usize,
    pub width: usize,
    pub height: usize,
    pub steps: usize,
    pub images: usize,
}

/// A refused request: which limit, and the message for the client.
#[derive(Debug, PartialEq)]
pub struct Refusal {
    pub limit: &'static str,
    pub message: String,
}

impl Caller {
    /// The first tier limit the request passes, if any (quota: HTTP 403).
    pub fn check(&self, ask: &Ask) -> std::result::Result<(), Refusal> {
        let t = &self.limits;
        let over = |limit: &'static str, what: String, max: usize| Refusal {
            limit,
            message: format!("{what} exceeds the {} tier's {limit} = {max}", self.tier),
        };
        if ask.loras > t.max_loras {
            return Err(over("max_loras", format!("{} LoRAs in one image", ask.loras), t.max_loras));
        }
        let pixels = ask.width.saturating_mul(ask.height);
        if pixels > t.max_pixels {
            return Err(over("max_pixels", format!("{}x{} = {pixels} pixels", ask.width, ask.height), t.max_pixels));
        }
        if ask.steps > t.max_steps {
            return Err(over("max_steps", format!("{} steps", ask.steps), t.max_steps));
        }
        if ask.images > t.max_batch {
            return Err(over("max_batch", format!("{} images (batch_size × n_iter)", ask.images), t.max_batch));
        }
        Ok(())
    }
}

/// Requests per minute and jobs in flight, per key.
#[derive(Default)]
pub struct Meter {
    inner: Mutex<MeterState>,
}

#[derive(Default)]
struct MeterState {
    recent: HashMap<String, VecDeque<Instant>>,
    in_flight: HashMap<String, usize>,
}

const WINDOW: Duration = Duration::from_secs(60);

impl Meter {
    fn state(&self) -> std::sync::MutexGuard<'_, MeterState> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Count one request of `caller` against its rate: `Err(seconds to wait)` when over it.
    pub fn admit_rate(&self, caller: &Caller) -> std::result::Result<(), u64> {
        let now = Instant::now();
        let mut s = self.state();
        let q = s.recent.entry(caller.key.clone()).or_default();
        while q.front().is_some_and(|t| now.duration_since(*t) >= WINDOW) {
            q.pop_front();
        }
        if q.len() >= caller.limits.requests_per_minute {
            let wait = q.front().map(|t| WINDOW.saturating_sub(now.duration_since(*t))).unwrap_or(WINDOW);
            return Err(wait.as_secs().max(1));
        }
        q.push_back(now);
        Ok(())
    }

    /// Take one of `caller`'s concurrent-job slots; `false` when all are in use. The slot is
    /// given back by [`Meter::release`].
    pub fn acquire(&self, caller: &Caller) -> bool {
        let mut s = self.state();
        let n = s.in_flight.entry(caller.key.clone()).or_default();
        if *n >= caller.limits.concurrent_jobs {
            return false;
        }
        *n += 1;
        true
    }

    pub fn release(&self, key: &str) {
        let mut s = self.state();
        if let Some(n) = s.in_flight.get_mut(key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                s.in_flight.remove(key);
            }
        }
    }
}
