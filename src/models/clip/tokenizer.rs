//! CLIP byte-level BPE tokenizer (SD1.x text encoder input), bit-exact with transformers'
//! `CLIPTokenizer` run with ftfy installed (and so with OpenAI's `clip/simple_tokenizer.py`).
//!
//! Owns: the vocabulary (embedded CLIP merges file, or a diffusers `tokenizer/` folder), text
//! normalisation (the ftfy fixes that real prompts hit, whitespace collapse, lowercase), the
//! pre-tokenizer, BPE with a cache, 77-id padding and decoding. Prompt syntax lives in `prompt.rs`.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use regex::Regex;
use unicode_normalization::UnicodeNormalization;

use crate::error::{Error, Result};

/// `<|startoftext|>` in the CLIP vocabulary.
pub const BOS: u32 = 49406;
/// `<|endoftext|>`; SD1 also pads with it.
pub const EOS: u32 = 49407;
/// Token slots of one CLIP text-encoder call, BOS and EOS included.
pub const MAX_LEN: usize = 77;

const OP: &str = "clip.tokenizer";
/// OpenAI's vocabulary uses merge lines [1, 49152 - 256 - 2 + 1) of the merges file; transformers'
/// `CLIPTokenizer` cuts `merges.txt` the same way, so both constructors share the limit.
const MERGE_LINES_END: usize = 49152 - 256 - 2 + 1;
/// Same pattern as the reference, applied to already-lowercased text.
const PRETOKEN_PATTERN: &str =
    r"(?i)<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";
/// Bounds the memory of the BPE cache when fed arbitrary text.
const CACHE_LIMIT: usize = 65_536;

static EMBEDDED_GZ: &[u8] = include_bytes!("bpe_simple_vocab_16e6.txt.gz");
static EMBEDDED: OnceLock<std::result::Result<Tokenizer, String>> = OnceLock::new();

/// CLIP BPE tokenizer. Cheap to share (`&'static` from [`Tokenizer::embedded`]); `Sync`.
pub struct Tokenizer {
    encoder: HashMap<String, u32>,
    decoder: HashMap<u32, String>,
    byte_char: [char; 256],
    char_byte: HashMap<char, u8>,
    /// Symbol ids (not vocabulary ids) of each byte, alone and as a word end (`</w>`).
    byte_sym: [u32; 256],
    byte_sym_end: [u32; 256],
    /// (left symbol, right symbol) -> (rank, merged symbol).
    merges: HashMap<(u32, u32), (u32, u32)>,
    /// Vocabulary id of each symbol; `None` when a merge produced a string the vocab lacks.
    sym_vocab: Vec<Option<u32>>,
    bos: u32,
    eos: u32,
    pretoken: Regex,
    cache: Mutex<HashMap<String, Vec<u32>>>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.encoder.len())
            .field("merges", &self.merges.len())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .finish()
    }
}

impl Tokenizer {
    pub const BOS: u32 = BOS;
    pub const EOS: u32 = EOS;

    /// The tokenizer built from CLIP's `bpe_simple_vocab_16e6.txt.gz`, which is compiled into the
    /// binary because single-file checkpoints carry no tokenizer. Built once, on first use.
    pub fn embedded() -> Result<&'static Tokenizer> {
        EMBEDDED
            .get_or_init(|| Self::from_bpe_gz(EMBEDDED_GZ).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|msg| Error::invalid(OP, msg.clone()))
    }

    /// Builds the vocabulary exactly as `simple_tokenizer.py` does from a gzipped merges file.
    pub fn from_bpe_gz(gz: &[u8]) -> Result<Tokenizer> {
        let mut text = String::new();
        flate2::read::GzDecoder::new(gz)
            .read_to_string(&mut text)
            .map_err(|e| Error::invalid(OP, format!("cannot decompress the BPE merges file: {e}")))?;
        let lines: Vec<&str> = text.split('\n').collect();
        if lines.len() < MERGE_LINES_END {
            return Err(Error::invalid(
                OP,
                format!("BPE merges file has {} lines, needs at least {MERGE_LINES_END}", lines.len()),
            ));
        }
        let merges = parse_merge_lines(&lines[1..MERGE_LINES_END], "bpe_simple_vocab_16e6.txt.gz")?;
        let byte_char = bytes_to_unicode();
        let mut order: Vec<String> = Vec::with_capacity(49408);
        order.extend(printable_first_bytes().map(|b| byte_char[b as usize].to_string()));
        let plain = order.clone();
        order.extend(plain.iter().map(|s| format!("{s}</w>")));
        order.extend(merges.iter().map(|(a, b)| format!("{a}{b}")));
        order.push("<|startoftext|>".into());
        order.push("<|endoftext|>".into());
        let mut encoder = HashMap::with_capacity(order.len());
        for (id, tok) in order.into_iter().enumerate() {
            // a duplicate string keeps its last id, as `dict(zip(vocab, range(len(vocab))))` does
            encoder.insert(tok, id as u32);
        }
        Self::build(encoder, merges)
    }

    /// Loads a diffusers/transformers `tokenizer/` folder (`vocab.json`, `merges.txt`).
    pub fn from_files(vocab_json: &Path, merges_txt: &Path) -> Result<Tokenizer> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|e| Error::invalid(OP, format!("cannot read {}: {e}", p.display())))
        };
        let vocab_text = read(vocab_json)?;
        let encoder: HashMap<String, u32> = serde_json::from_str(&vocab_text)
            .map_err(|e| Error::invalid(OP, format!("{}: not a token -> id JSON object: {e}", vocab_json.display())))?;
        let merges_text = read(merges_txt)?;
        let lines: Vec<&str> = merges_text.trim().split('\n').collect();
        let end = lines.len().min(MERGE_LINES_END);
        let merges = parse_merge_lines(lines.get(1..end).unwrap_or(&[]), &merges_txt.display().to_string())?;
        Self::build(encoder, merges)
    }

    fn build(encoder: HashMap<String, u32>, merge_list: Vec<(String, String)>) -> Result<Tokenizer> {
        let special = |name: &str| {
            encoder
                .get(name)
                .copied()
                .ok_or_else(|| Error::invalid(OP, format!("vocabulary lacks the special token {name}")))
        };
        let (bos, eos) = (special("<|startoftext|>")?, special("<|endoftext|>")?);
        let byte_char = bytes_to_unicode();
        let mut sym_ids: HashMap<String, u32> = HashMap::new();
        let mut sym_vocab: Vec<Option<u32>> = Vec::new();
        let mut intern = |s: String| -> u32 {
            if let Some(&id) = sym_ids.get(&s) {
                return id;
            }
            let id = sym_vocab.len() as u32;
            sym_vocab.push(encoder.get(&s).copied());
            sym_ids.insert(s, id);
            id
        };
        let mut byte_sym = [0u32; 256];
        let mut byte_sym_end = [0u32; 256];
        for b in 0..256 {
            byte_sym[b] = intern(byte_char[b].to_string());
            byte_sym_end[b] = intern(format!("{}</w>", byte_char[b]));
        }
        let mut merges = HashMap::with_capacity(merge_list.len());
        for (rank, (a, b)) in merge_list.into_iter().enumerate() {
            let joined = format!("{a}{b}");
            let key = (intern(a), intern(b));
            // later duplicates win, like `dict(zip(merges, range(len(merges))))`
            merges.insert(key, (rank as u32, intern(joined)));
        }
        let decoder = encoder.iter().map(|(k, &v)| (v, k.clone())).collect();
        let char_byte = (0..256).map(|b| (byte_char[b], b as u8)).collect();
        let pretoken =
            Regex::new(PRETOKEN_PATTERN).map_err(|e| Error::invalid(OP, format!("pre-tokenizer pattern: {e}")))?;
        Ok(Tokenizer {
            encoder,
            decoder,
            byte_char,
            char_byte,
            byte_sym,
            byte_sym_end,
            merges,
            sym_vocab,
            bos,
            eos,
            pretoken,
            cache: Mutex::new(HashMap::new()),
        })
    }

    pub fn bos(&self) -> u32 {
        self.bos
    }

    pub fn eos(&self) -> u32 {
        self.eos
    }

    pub fn vocab_size(&self) -> usize {
        self.encoder.len()
    }

    /// Id of one vocabulary entry, e.g. `",</w>"` (267).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.encoder.get(token).copied()
    }

    /// Vocabulary string of `id` (transformers' `convert_ids_to_tokens`), e.g. `"cat</w>"`.
    pub fn token(&self, id: u32) -> Option<&str> {
        self.decoder.get(&id).map(String::as_str)
    }

    /// Token ids of `text` without BOS/EOS and without truncation. Every character is tokenized
    /// as text, A1111 syntax (`(`, `[`, `\`, `<lora:…>`) included; parsing it is `prompt.rs`'s job.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let text = normalize(text);
        let mut ids = Vec::new();
        for m in self.pretoken.find_iter(&text) {
            match m.as_str() {
                "<|startoftext|>" => ids.push(self.bos),
                "<|endoftext|>" => ids.push(self.eos),
                word => self.bpe_cached(word, &mut ids),
            }
        }
        ids
    }

    /// `[BOS] + encode(text) + [EOS]`, untruncated: transformers' `CLIPTokenizer(text).input_ids`
    /// (which also cuts only when asked, `truncation=True`), so longer than 77 ids when the text is.
    pub fn encode_with_special(&self, text: &str) -> Vec<u32> {
        let mut ids = vec![self.bos];
        ids.extend(self.encode(text));
        ids.push(self.eos);
        ids
    }

    /// `text` as one SD1 encoder input: BOS, the first 75 ids, EOS, EOS padding.
    pub fn encode_77(&self, text: &str) -> [u32; MAX_LEN] {
        self.pad_77(&self.encode(text))
    }

    /// Wraps content ids (no BOS/EOS) as BOS + first 75 + EOS, padded to 77 with EOS.
    pub fn pad_77(&self, ids: &[u32]) -> [u32; MAX_LEN] {
        let mut out = [self.eos; MAX_LEN];
        out[0] = self.bos;
        let n = ids.len().min(MAX_LEN - 2);
        out[1..1 + n].copy_from_slice(&ids[..n]);
        out
    }

    /// Text of `ids` as transformers decodes it: `</w>` becomes a space, the result is trimmed,
    /// invalid UTF-8 becomes U+FFFD, unknown ids are skipped, special tokens appear as text.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for tok in ids.iter().filter_map(|id| self.decoder.get(id)) {
            for c in tok.chars() {
                match self.char_byte.get(&c) {
                    Some(&b) => bytes.push(b),
                    None => bytes.extend_from_slice(c.encode_utf8(&mut [0u8; 4]).as_bytes()),
                }
            }
        }
        String::from_utf8_lossy(&bytes).replace("</w>", " ").trim().to_string()
    }

    /// The byte-level string BPE sees for `word` (exposed for debugging vocab questions).
    pub fn byte_encode(&self, word: &str) -> String {
        word.bytes().map(|b| self.byte_char[b as usize]).collect()
    }

    fn bpe_cached(&self, word: &str, out: &mut Vec<u32>) {
        if let Ok(cache) = self.cache.lock() {
            if let Some(ids) = cache.get(word) {
                out.extend_from_slice(ids);
                return;
            }
        }
        let ids = self.bpe(word.as_bytes());
        out.extend_from_slice(&ids);
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
            cache.insert(word.to_string(), ids);
        }
    }

    /// Merges the lowest-ranked adjacent pair, all its non-overlapping occurrences left to right,
    /// until no pair has a rank (the reference loop, on interned symbols).
    fn bpe(&self, bytes: &[u8]) -> Vec<u32> {
        let Some((&last, head)) = bytes.split_last() else {
            return Vec::new();
        };
        let mut word: Vec<u32> = head.iter().map(|&b| self.byte_sym[b as usize]).collect();
        word.push(self.byte_sym_end[last as usize]);
        while word.len() > 1 {
            let best = word
                .windows(2)
                .filter_map(|p| self.merges.get(&(p[0], p[1])).map(|&(rank, merged)| (rank, p[0], p[1], merged)))
                .min();
            let Some((_, first, second, merged)) = best else {
                break;
            };
            let mut next = Vec::with_capacity(word.len());
            let mut i = 0;
            while i < word.len() {
                if word[i] == first && i + 1 < word.len() && word[i + 1] == second {
                    next.push(merged);
                    i += 2;
                } else {
                    next.push(word[i]);
                    i += 1;
                }
            }
            word = next;
        }
        word.iter().map(|&s| self.sym_vocab.get(s as usize).copied().flatten().unwrap_or(self.eos)).collect()
    }
}

fn parse_merge_lines(lines: &[&str], file: &str) -> Result<Vec<(String, String)>> {
    lines
        .iter()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            let mut parts = line.split_whitespace();
            match (parts.next(), parts.next(), parts.next()) {
                (Some(a), Some(b), None) => Ok((a.to_string(), b.to_string())),
                _ => Err(Error::invalid(OP, format!("{file}: merge line {} is {line:?}, expected two symbols", i + 2))),
            }
        })
        .collect()
}

/// Bytes that CLIP maps to themselves: `!`..`~`, `¡`..`¬`, `®`..`ÿ`.
fn is_printable_byte(b: u8) -> bool {
    (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE
}

/// Vocabulary order of the byte symbols: the printable bytes, then the rest in byte order.
fn printable_first_bytes() -> impl Iterator<Item = u8> {
    (0..=255u8).filter(|&b| is_printable_byte(b)).chain((0..=255u8).filter(|&b| !is_printable_byte(b)))
}

/// GPT-2/CLIP byte -> character table, so BPE never sees spaces or control bytes: printable bytes
/// stand for themselves, the other 68 become U+0100.. in byte order.
fn bytes_to_unicode() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next = 0x100u32;
    for b in 0..=255u8 {
        table[b as usize] = if is_printable_byte(b) {
            char::from(b)
        } else {
            next += 1;
            char::from_u32(next - 1).unwrap_or('\u{FFFD}')
        };
    }
    table
}

/// The reference's text cleaning: `whitespace_clean(ftfy.fix_text(text)).lower()`.
pub fn normalize(text: &str) -> String {
    let fixed = fix_text(text);
    let mut out = String::with_capacity(fixed.len());
    for word in fixed.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out.to_lowercase()
}

/// The ftfy 6 `fix_text` steps that real prompts can hit, in ftfy's order and repeated to a fixed
/// point per line: HTML entities (off from the first line containing `<` on), C1 controls as
/// Windows-1252, Latin ligatures, full/half width forms, curly quotes, line breaks, terminal
/// escapes, control characters, NFC. Mojibake repair (`fix_encoding`) is not reproduced.
pub fn fix_text(text: &str) -> String {
    let mut unescape = true;
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        if line.contains('<') {
            unescape = false;
        }
        let mut cur = line.to_string();
        // each pass only shrinks entities or is idempotent; the bound is a guard, not a limit
        for _ in 0..64 {
            let next = fix_pass(&cur, unescape);
            if next == cur {
                break;
            }
            cur = next;
        }
        out.push_str(&cur);
    }
    out
}

fn fix_pass(text: &str, unescape: bool) -> String {
    let text = if unescape { unescape_html(text) } else { text.to_string() };
    let mut s = String::with_capacity(text.len());
    for c in text.chars() {
        let c = match c as u32 {
            0x80..=0x9F => cp1252_c1(c),
            _ => c,
        };
        match c {
            '\u{3000}' => s.push(' '),
            '\u{FF01}'..='\u{FFEF}' => s.extend(c.to_string().nfkc()),
            'Ĳ'..='ǳ' | 'ﬀ'..='ﬆ' => s.push_str(ligature(c).unwrap_or(c.encode_utf8(&mut [0; 4]))),
            c => s.push(c),
        }
    }
    let s: String = s
        .chars()
        .map(|c| match c {
            '\u{2BC}' | '\u{2018}'..='\u{201B}' => '\'',
            '\u{201C}'..='\u{201F}' => '"',
            c => c,
        })
        .collect();
    let s = s.replace("\r\n", "\n").replace(['\r', '\u{2028}', '\u{2029}', '\u{85}'], "\n");
    let s = remove_terminal_escapes(&s);
    let s: String = s.chars().filter(|&c| !is_removed_control(c)).collect();
    s.nfc().collect()
}

fn is_removed_control(c: char) -> bool {
    matches!(c as u32, 0x00..=0x08 | 0x0B | 0x0E..=0x1F | 0x7F | 0x206A..=0x206F | 0xFEFF | 0xFFF9..=0xFFFC)
}

/// Drops `ESC [ (digit|;)* letter` sequences.
fn remove_terminal_escapes(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut last = 0;
    let mut i = 0;
    while i < b.len() {
        if b[i] == 0x1B && b.get(i + 1) == Some(&b'[') {
            let mut j = i + 2;
            while j < b.len() && (b[j].is_ascii_digit() || b[j] == b';') {
                j += 1;
            }
            if j < b.len() && b[j].is_ascii_alphabetic() {
                out.push_str(&s[last..i]);
                last = j + 1;
                i = j + 1;
                continue;
            }
        }
        i += 1;
    }
    out.push_str(&s[last..]);
    out
}

/// Windows-1252 reading of a C1 control; the five undefined bytes stay as they are ("sloppy").
fn cp1252_c1(c: char) -> char {
    const TABLE: [u32; 32] = [
        0x20AC, 0x81, 0x201A, 0x192, 0x201E, 0x2026, 0x2020, 0x2021, 0x2C6, 0x2030, 0x160, 0x2039, 0x152, 0x8D, 0x17D,
        0x8F, 0x90, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014, 0x2DC, 0x2122, 0x161, 0x203A, 0x153, 0x9D,
        0x17E, 0x178,
    ];
    let idx = (c as u32).wrapping_sub(0x80) as usize;
    TABLE.get(idx).and_then(|&u| char::from_u32(u)).unwrap_or(c)
}

/// HTML 4 Latin-1 entity names for U+00A0..=U+00FF, in code point order.
const LATIN1_ENTITIES: &str = "nbsp iexcl cent pound curren yen brvbar sect uml copy ordf laquo not shy reg macr \
deg plusmn sup2 sup3 acute micro para middot cedil sup1 ordm raquo frac14 frac12 frac34 iquest \
Agrave Aacute Acirc Atilde Auml Aring AElig Ccedil Egrave Eacute Ecirc Euml Igrave Iacute Icirc Iuml \
ETH Ntilde Ograve Oacute Ocirc Otilde Ouml times Oslash Ugrave Uacute Ucirc Uuml Yacute THORN szlig \
agrave aacute acirc atilde auml aring aelig ccedil egrave eacute ecirc euml igrave iacute icirc iuml \
eth ntilde ograve oacute ocirc otilde ouml divide oslash ugrave uacute ucirc uuml yacute thorn yuml";

/// Other entities that prompts copied from web pages carry (HTML5 has 2,231), as `name=hex`.
const OTHER_ENTITIES: &str = "amp=26 AMP=26 lt=3C LT=3C gt=3E GT=3E quot=22 QUOT=22 apos=27 COPY=A9 REG=AE \
OElig=152 oelig=153 Scaron=160 scaron=161 Yuml=178 fnof=192 circ=2C6 tilde=2DC ensp=2002 emsp=2003 \
thinsp=2009 zwnj=200C zwj=200D lrm=200E rlm=200F ndash=2013 mdash=2014 lsquo=2018 rsquo=2019 \
sbquo=201A ldquo=201C rdquo=201D bdquo=201E dagger=2020 Dagger=2021 bull=2022 hellip=2026 \
permil=2030 prime=2032 Prime=2033 lsaquo=2039 rsaquo=203A oline=203E frasl=2044 euro=20AC \
trade=2122 TRADE=2122 larr=2190 uarr=2191 rarr=2192 darr=2193 harr=2194 spades=2660 clubs=2663 \
hearts=2665 diams=2666";

/// ftfy's Latin ligature table, as `ligature replacement` pairs.
const LIGATURES: &str = "Ĳ IJ ĳ ij ŉ ʼn Ǳ DZ ǲ Dz ǳ dz Ǆ DŽ ǅ Dž ǆ dž Ǉ LJ ǈ Lj ǉ lj Ǌ NJ ǋ Nj ǌ nj \
ﬀ ff ﬁ fi ﬂ fl ﬃ ffi ﬄ ffl ﬅ ſt ﬆ st";

fn ligature(c: char) -> Option<&'static str> {
    let mut it = LIGATURES.split(' ');
    while let (Some(lig), Some(rep)) = (it.next(), it.next()) {
        if lig.chars().eq(std::iter::once(c)) {
            return Some(rep);
        }
    }
    None
}

fn other_entities() -> impl Iterator<Item = (&'static str, u32)> {
    OTHER_ENTITIES.split(' ').filter_map(|e| {
        let (name, hex) = e.split_once('=')?;
        Some((name, u32::from_str_radix(hex, 16).ok()?))
    })
}

fn entity(name: &str) -> Option<char> {
    LATIN1_ENTITIES
        .split(' ')
        .position(|e| e == name)
        .map(|i| 0xA0 + i as u32)
        .or_else(|| other_entities().find(|e| e.0 == name).map(|e| e.1))
        .and_then(char::from_u32)
}

/// ftfy's `unescape_html`: `&name;` (case-exact, or an all-caps spelling of an all-lowercase
/// name, giving the uppercased character) and `&#N;` / `&#xH;` references as `html.unescape`
/// decodes them. Anything else is left alone.
fn unescape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let tail = &rest[amp..];
        let body_len = tail[1..].bytes().take(26).take_while(|b| b.is_ascii_alphanumeric() || *b == b'#').count();
        let candidate = tail.get(1..1 + body_len).filter(|_| tail.as_bytes().get(1 + body_len) == Some(&b';'));
        let replaced = candidate.and_then(|body| {
            let (hash, name) = match body.strip_prefix('#') {
                Some(n) => (true, n),
                None => (false, body),
            };
            // ftfy's pattern: `&#?[0-9A-Za-z]{1,24};`
            if name.is_empty() || name.len() > 24 || name.contains('#') {
                return None;
            }
            let text = if hash { numeric_charref(name)? } else { named_entity(name)? };
            Some((text, 2 + body.len()))
        });
        match replaced {
            Some((s, used)) => {
                out.push_str(&s);
                rest = &tail[used..];
            }
            None => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn named_entity(name: &str) -> Option<String> {
    if let Some(c) = entity(name) {
        return Some(c.to_string());
    }
    let lower = name.to_ascii_lowercase();
    let all_caps = name.bytes().all(|b| !b.is_ascii_lowercase());
    let lower_exists = LATIN1_ENTITIES.split(' ').chain(other_entities().map(|e| e.0)).any(|e| e == lower);
    if all_caps && lower_exists {
        return entity(&lower).map(|c| c.to_uppercase().collect());
    }
    None
}

/// `html.unescape` of `&#...;`, kept only when it consumed the whole reference (ftfy's rule).
fn numeric_charref(digits: &str) -> Option<String> {
    let (radix, body) = match digits.strip_prefix(['x', 'X']) {
        Some(h) => (16, h),
        None => (10, digits),
    };
    if body.is_empty() || !body.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let num = body
        .chars()
        .fold(0u64, |acc, c| acc.saturating_mul(radix as u64).saturating_add(c.to_digit(radix).unwrap_or(0) as u64));
    let out = match num {
        0 => "\u{FFFD}".to_string(),
        0x0D => "\r".to_string(),
        0x80..=0x9F => cp1252_c1(char::from_u32(num as u32)?).to_string(),
        0xD800..=0xDFFF => "\u{FFFD}".to_string(),
        n if n > 0x10FFFF => "\u{FFFD}".to_string(),
        0x01..=0x08 | 0x0B | 0x0E..=0x1F | 0x7F | 0xFDD0..=0xFDEF => String::new(),
        n if n & 0xFFFE == 0xFFFE => String::new(),
        n => char::from_u32(n as u32)?.to_string(),
    };
    if out.contains(';') {
        None
    } else {
        Some(out)
    }
}
