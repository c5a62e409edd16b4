//! A1111 prompt syntax: attention emphasis (`(x)`, `((x))`, `(x:1.3)`, `[x]`, escapes), `BREAK`,
//! and the split into 75-token chunks with comma back-tracking, each wrapped as BOS + 75 + EOS =
//! 77 ids with one weight per id. Extra-network tags (`<lora:NAME:TE:UNET>`) are removed before,
//! by `lora::tags`.
//!
//! Mirrors `modules/prompt_parser.py:
//! parse_prompt_attention` and `modules/sd_hijack_clip.py: tokenize_line` (defaults: emphasis
//! "Original", comma padding backtrack 20). The weights are applied later, to the encoder output.
//! Not handled here: prompt editing `[a:b:when]`, alternation `[a|b]`, `AND`, textual inversion.

use super::tokenizer::{Tokenizer, MAX_LEN};
use crate::error::Result;

/// Prompt tokens per chunk (77 minus BOS and EOS).
pub const CHUNK_TOKENS: usize = MAX_LEN - 2;
/// A1111 `comma_padding_backtrack`: a chunk that fills up within this many tokens after a comma
/// moves the text after the comma to the next chunk.
pub const COMMA_BACKTRACK: usize = 20;

const ROUND_MULT: f64 = 1.1;
const SQUARE_MULT: f64 = 1.0 / 1.1;

/// One text-encoder input: 77 ids and the emphasis multiplier of each (1.0 on BOS/EOS/padding).
#[derive(Clone, Debug, PartialEq)]
pub struct PromptChunk {
    pub ids: [u32; MAX_LEN],
    pub weights: [f32; MAX_LEN],
}

#[derive(Clone, Debug, PartialEq)]
pub struct ParsedPrompt {
    /// At least one chunk; the encodings of all chunks are concatenated along the token axis.
    pub chunks: Vec<PromptChunk>,
    /// Prompt tokens as A1111's counter shows them: 75 per closed chunk plus the last chunk's.
    pub token_count: usize,
}

/// A1111 handling of one prompt whose extra-network tags are already removed
/// (`lora::tags`): emphasis parsed, chunks built. Never fails today; a `Result` so that syntax
/// errors can be reported later without changing callers.
pub fn parse_prompt(tok: &Tokenizer, text: &str) -> Result<ParsedPrompt> {
    let fragments = parse_attention_f64(text);
    let (chunks, token_count) = chunk_fragments(tok, &fragments);
    Ok(ParsedPrompt { chunks, token_count })
}

/// `parse_prompt_attention` with the weights rounded to f32.
pub fn parse_attention(text: &str) -> Vec<(String, f32)> {
    parse_attention_f64(text).into_iter().map(|(t, w)| (t, w as f32)).collect()
}

/// `parse_prompt_attention` in the reference's f64 arithmetic (so equal-weight merging and the
/// BREAK marker, weight exactly -1, behave identically). Differences: a `(x:w)` weight that is
/// not a number (`(x:1.2.3)`, where A1111 raises) stays literal text; only ASCII digits count.
pub fn parse_attention_f64(text: &str) -> Vec<(String, f64)> {
    let mut res: Vec<(String, f64)> = Vec::new();
    let mut round: Vec<usize> = Vec::new();
    let mut square: Vec<usize> = Vec::new();
    let multiply = |res: &mut Vec<(String, f64)>, start: usize, m: f64| {
        for item in res.iter_mut().skip(start) {
            item.1 *= m;
        }
    };
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => match b.get(i + 1) {
                Some(&c @ (b'(' | b')' | b'[' | b']' | b'\\')) => {
                    res.push((char::from(c).to_string(), 1.0));
                    i += 2;
                }
                // a lone backslash matches the reference's `\\` alternative and yields ""
                _ => {
                    res.push((String::new(), 1.0));
                    i += 1;
                }
            },
            b'(' => {
                round.push(res.len());
                i += 1;
            }
            b'[' => {
                square.push(res.len());
                i += 1;
            }
            b':' => match weight_token(b, i) {
                Some((w, end)) => {
                    match (round.is_empty(), w) {
                        (false, Some(w)) => {
                            let start = round.pop().unwrap_or(0);
                            multiply(&mut res, start, w);
                        }
                        _ => push_text(&mut res, &text[i..end]),
                    }
                    i = end;
                }
                None => {
                    push_text(&mut res, ":");
                    i += 1;
                }
            },
            b')' => {
                match round.pop() {
                    Some(start) => multiply(&mut res, start, ROUND_MULT),
                    None => push_text(&mut res, ")"),
                }
                i += 1;
            }
            b']' => {
                match square.pop() {
                    Some(start) => multiply(&mut res, start, SQUARE_MULT),
                    None => push_text(&mut res, "]"),
                }
                i += 1;
            }
            _ => {
                let end = b[i..]
                    .iter()
                    .position(|c| matches!(c, b'\\' | b'(' | b')' | b'[' | b']' | b':'))
                    .map_or(b.len(), |p| i + p);
                push_text(&mut res, &text[i..end]);
                i = end;
            }
        }
    }
    for &start in &round {
        multiply(&mut res, start, ROUND_MULT);
    }
    for &start in &square {
        multiply(&mut res, start, SQUARE_MULT);
    }
    if res.is_empty() {
        res.push((String::new(), 1.0));
    }
    let mut merged: Vec<(String, f64)> = Vec::with_capacity(res.len());
    for (t, w) in res {
        match merged.last_mut() {
            Some(last) if last.1 == w => last.0.push_str(&t),
            _ => merged.push((t, w)),
        }
    }
    merged
}

/// `:([+-]?[.\d]+)\)` at `i`: (parsed weight or None if not a number, end byte index).
fn weight_token(b: &[u8], i: usize) -> Option<(Option<f64>, usize)> {
    let mut j = i + 1;
    if matches!(b.get(j), Some(b'+' | b'-')) {
        j += 1;
    }
    let digits_start = j;
    while j < b.len() && (b[j].is_ascii_digit() || b[j] == b'.') {
        j += 1;
    }
    if j == digits_start || b.get(j) != Some(&b')') {
        return None;
    }
    let number = std::str::from_utf8(&b[i + 1..j]).ok()?;
    Some((number.parse::<f64>().ok(), j + 1))
}

/// Plain text, split at `\s*\bBREAK\b\s*` with a marker (weight -1) between the parts.
fn push_text(res: &mut Vec<(String, f64)>, text: &str) {
    for (k, part) in split_break(text).into_iter().enumerate() {
        if k > 0 {
            res.push(("BREAK".to_string(), -1.0));
        }
        res.push((part.to_string(), 1.0));
    }
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// `re.split(r"\s*\bBREAK\b\s*", text)`.
fn split_break(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut part_start = 0;
    let mut search = 0;
    while let Some(off) = text[search..].find("BREAK") {
        let idx = search + off;
        let end_word = idx + "BREAK".len();
        let bounded_left = text[..idx].chars().next_back().is_none_or(|c| !is_word_char(c));
        let bounded_right = text[end_word..].chars().next().is_none_or(|c| !is_word_char(c));
        if !(bounded_left && bounded_right) {
            search = idx + 1;
            continue;
        }
        let mut start = idx;
        while let Some(c) = text[part_start..start].chars().next_back().filter(|c| c.is_whitespace()) {
            start -= c.len_utf8();
        }
        let mut end = end_word;
        while let Some(c) = text[end..].chars().next().filter(|c| c.is_whitespace()) {
            end += c.len_utf8();
        }
        parts.push(&text[part_start..start]);
        part_start = end;
        search = end;
    }
    parts.push(&text[part_start..]);
    parts
}

/// `tokenize_line`: fragments tokenized one by one (no BPE merges across fragments), tokens
/// packed 75 to a chunk; BREAK closes the chunk; a chunk that fills within 20 tokens after a comma
/// hands the tokens after that comma to the next one. Returns the chunks and A1111's token count.
pub fn chunk_fragments(tok: &Tokenizer, fragments: &[(String, f64)]) -> (Vec<PromptChunk>, usize) {
    let mut b = ChunkBuilder {
        chunks: Vec::new(),
        ids: Vec::new(),
        weights: Vec::new(),
        token_count: 0,
        last_comma: None,
        bos: tok.bos(),
        eos: tok.eos(),
    };
    let comma = tok.token_id(",</w>");
    for (text, weight) in fragments {
        if text == "BREAK" && *weight == -1.0 {
            b.next_chunk(false);
            continue;
        }
        for token in tok.encode(text) {
            if Some(token) == comma {
                b.last_comma = Some(b.ids.len());
            } else if let Some(lc) =
                b.last_comma.filter(|&lc| b.ids.len() == CHUNK_TOKENS && b.ids.len() - lc <= COMMA_BACKTRACK)
            {
                let reloc_ids = b.ids.split_off(lc + 1);
                let reloc_weights = b.weights.split_off(lc + 1);
                b.next_chunk(false);
                b.ids = reloc_ids;
                b.weights = reloc_weights;
            }
            if b.ids.len() == CHUNK_TOKENS {
                b.next_chunk(false);
            }
            b.ids.push(token);
            b.weights.push(*weight as f32);
        }
    }
    if !b.ids.is_empty() || b.chunks.is_empty() {
        b.next_chunk(true);
    }
    (b.chunks, b.token_count)
}

struct ChunkBuilder {
    chunks: Vec<PromptChunk>,
    ids: Vec<u32>,
    weights: Vec<f32>,
    token_count: usize,
    last_comma: Option<usize>,
    bos: u32,
    eos: u32,
}

impl ChunkBuilder {
    fn next_chunk(&mut self, is_last: bool) {
        self.token_count += if is_last { self.ids.len() } else { CHUNK_TOKENS };
        let mut chunk = PromptChunk { ids: [self.eos; MAX_LEN], weights: [1.0; MAX_LEN] };
        chunk.ids[0] = self.bos;
        let n = self.ids.len().min(CHUNK_TOKENS);
        chunk.ids[1..1 + n].copy_from_slice(&self.ids[..n]);
        chunk.weights[1..1 + n].copy_from_slice(&self.weights[..n]);
        self.chunks.push(chunk);
        self.ids.clear();
        self.weights.clear();
        self.last_comma = None;
    }
}
