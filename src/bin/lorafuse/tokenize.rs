//! `lorafuse tokenize`: what the text encoder sees for a prompt (A1111 parsing, the default), or
//! the plain CLIP tokenization of the unparsed string (`--raw`).

use anyhow::Result;
use clap::Args;
use lorafuse::lora::extract_extra_networks;
use lorafuse::models::clip::prompt::{parse_prompt, ParsedPrompt};
use lorafuse::models::clip::tokenizer::Tokenizer;

#[derive(Args, Debug)]
#[command(group = clap::ArgGroup::new("text").required(true).args(["prompt", "prompt_flag"]))]
pub struct TokenizeArgs {
    /// The prompt.
    pub prompt: Option<String>,
    /// The prompt, as an option (same as the positional PROMPT; `-p` as in generate).
    #[arg(short = 'p', long = "prompt", value_name = "PROMPT")]
    pub prompt_flag: Option<String>,
    /// Print one JSON object: {"ids", "weights", "tokens", "chunks", "token_count"}
    /// ({"ids", "tokens"} with --raw).
    #[arg(long)]
    pub json: bool,
    /// Plain CLIP tokenization of the unparsed text (transformers' `CLIPTokenizer` ids: BOS …
    /// EOS, no emphasis/BREAK/LoRA-tag handling). Like transformers without `truncation=True`,
    /// a text longer than 77 tokens is printed whole, not cut.
    #[arg(long)]
    pub raw: bool,
}

/// Prints the ids, one weight per id (parsed mode), the vocabulary token strings and, in parsed
/// mode, the chunk boundaries.
pub fn run(args: &TokenizeArgs) -> Result<()> {
    let prompt = args.prompt.as_deref().or(args.prompt_flag.as_deref()).unwrap_or_default();
    let tok = Tokenizer::embedded()?;
    if args.raw {
        let ids = tok.encode_with_special(prompt);
        let tokens = token_strings(tok, &ids);
        if args.json {
            println!("{}", serde_json::json!({ "ids": ids, "tokens": tokens }));
        } else {
            for (id, t) in ids.iter().zip(&tokens) {
                println!("{id:>6}  {t}");
            }
            println!("tokens: {} (BOS and EOS not counted)", ids.len() - 2);
        }
        return Ok(());
    }
    // LoRA tags are not text the encoder sees: strip them as generate does
    let parsed = parse_prompt(tok, &extract_extra_networks(prompt)?.text)?;
    let seen = Seen::of(&parsed, tok);
    if args.json {
        // a struct, not `json!`, so the f32 weights print as f32 (1.1, not 1.100000023841858)
        #[derive(serde::Serialize)]
        struct Out<'a> {
            ids: &'a [u32],
            weights: &'a [f32],
            tokens: &'a [String],
            chunks: Vec<[usize; 2]>,
            token_count: usize,
        }
        let out = Out {
            ids: &seen.ids,
            weights: &seen.weights,
            tokens: &seen.tokens,
            chunks: seen.chunks.iter().map(|r| [r.start, r.end]).collect(),
            token_count: parsed.token_count,
        };
        println!("{}", serde_json::to_string(&out)?);
    } else {
        let n = seen.chunks.len();
        for (k, r) in seen.chunks.iter().enumerate() {
            println!("chunk {} of {n} (ids {}..{})", k + 1, r.start, r.end);
            for i in r.clone() {
                println!("{:>6}  {:<10}  {}", seen.ids[i], seen.weights[i], seen.tokens[i]);
            }
        }
        println!("tokens: {} (A1111's counter: 75 per closed chunk plus the last one's)", parsed.token_count);
    }
    Ok(())
}

/// The encoder input of a parsed prompt without the EOS padding: each chunk as BOS, its prompt
/// tokens, EOS, chunks in order; `chunks` are the index ranges of each chunk in `ids`. A
/// single-chunk plain prompt gives exactly `CLIPTokenizer`'s untruncated ids.
struct Seen {
    ids: Vec<u32>,
    weights: Vec<f32>,
    tokens: Vec<String>,
    chunks: Vec<std::ops::Range<usize>>,
}

impl Seen {
    fn of(parsed: &ParsedPrompt, tok: &Tokenizer) -> Seen {
        let (mut ids, mut weights, mut chunks) = (Vec::new(), Vec::new(), Vec::new());
        for c in &parsed.chunks {
            let start = ids.len();
            // BOS, the prompt tokens, then EOS padding to 77: the trailing EOS run is padding
            // (a prompt ending in a literal `<|endoftext|>` loses only that id's display)
            let n = c.ids[1..].iter().rposition(|&t| t != tok.eos()).map_or(0, |p| p + 1);
            ids.extend_from_slice(&c.ids[..=n]);
            weights.extend_from_slice(&c.weights[..=n]);
            ids.push(tok.eos());
            weights.push(1.0);
            chunks.push(start..ids.len());
        }
        let tokens = token_strings(tok, &ids);
        Seen { ids, weights, tokens, chunks }
    }
}

fn token_strings(tok: &Tokenizer, ids: &[u32]) -> Vec<String> {
    ids.iter().map(|&id| tok.token(id).unwrap_or("?").to_string()).collect()
}
