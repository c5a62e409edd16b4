//! A1111 prompt syntax: attention parsing (A1111's own doctest outputs), BREAK, 75-token chunks
//! with comma back-tracking, per-token weights, escapes, LoRA tags, and a no-panic fuzz.

use lorafuse::lora::tags::{extract_extra_networks, ExtraNetworks, LoraTag};
use lorafuse::models::clip::prompt::{parse_attention, parse_attention_f64, parse_prompt, ParsedPrompt, CHUNK_TOKENS};
use lorafuse::models::clip::tokenizer::{Tokenizer, BOS, EOS};
use rand::{Rng, SeedableRng};

fn tok() -> &'static Tokenizer {
    Tokenizer::embedded().expect("embedded tokenizer")
}

/// What the pipeline does with a prompt: tags out (`lora::tags`), then the syntax parsed.
fn parse_tagged(prompt: &str) -> lorafuse::Result<(ParsedPrompt, ExtraNetworks)> {
    let tags = extract_extra_networks(prompt)?;
    Ok((parse_prompt(tok(), &tags.text)?, tags))
}

fn attn(text: &str) -> Vec<(String, f64)> {
    parse_attention_f64(text)
}

fn frags(list: &[(&str, f64)]) -> Vec<(String, f64)> {
    list.iter().map(|(t, w)| (t.to_string(), *w)).collect()
}

/// Content tokens of a chunk (between BOS and the first EOS) and their weights.
fn content(p: &ParsedPrompt, chunk: usize) -> (Vec<u32>, Vec<f32>) {
    let c = &p.chunks[chunk];
    assert_eq!((c.ids[0], c.ids[76]), (BOS, EOS), "chunk {chunk} framing");
    let n = c.ids[1..].iter().position(|&id| id == EOS).unwrap_or(76);
    // everything after the content is EOS padding with weight 1
    assert!(c.ids[1 + n..].iter().all(|&id| id == EOS), "chunk {chunk} padding");
    assert!(c.weights[1 + n..].iter().all(|&w| w == 1.0) && c.weights[0] == 1.0, "chunk {chunk} pad weights");
    (c.ids[1..1 + n].to_vec(), c.weights[1..1 + n].to_vec())
}

#[test]
fn attention_matches_a1111_doctests() {
    // expected values: the docstring of A1111 modules/prompt_parser.py::parse_prompt_attention
    assert_eq!(attn("normal text"), frags(&[("normal text", 1.0)]));
    assert_eq!(attn("an (important) word"), frags(&[("an ", 1.0), ("important", 1.1), (" word", 1.0)]));
    assert_eq!(attn("(unbalanced"), frags(&[("unbalanced", 1.1)]));
    assert_eq!(attn(r"\(literal\]"), frags(&[("(literal]", 1.0)]));
    assert_eq!(attn("(unnecessary)(parens)"), frags(&[("unnecessaryparens", 1.1)]));
    assert_eq!(
        attn("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky)))."),
        frags(&[
            ("a ", 1.0),
            ("house", 1.5730000000000004),
            (" ", 1.1),
            ("on", 1.0),
            (" a ", 1.1),
            ("hill", 0.55),
            (", sun, ", 1.1),
            ("sky", 1.4641000000000006),
            (".", 1.1),
        ])
    );
    let f32_version = parse_attention("a (((house:1.3)) [on]");
    assert_eq!(f32_version[1], ("house".to_string(), 1.5730000000000004f64 as f32));
}

#[test]
fn attention_edge_cases_match_a1111() {
    // expected values: printed by A1111's parse_prompt_attention on these inputs
    assert_eq!(attn(""), frags(&[("", 1.0)]));
    assert_eq!(attn("((a)"), frags(&[("a", 1.2100000000000002)]));
    assert_eq!(attn("a]b["), frags(&[("a]b", 1.0)]));
    assert_eq!(attn("a:1.5) b"), frags(&[("a:1.5) b", 1.0)]));
    assert_eq!(attn("(a:1.)"), frags(&[("a", 1.0)]));
    assert_eq!(attn("(a:+.5)"), frags(&[("a", 0.5)]));
    assert_eq!(attn(r"x\y"), frags(&[("xy", 1.0)]));
    assert_eq!(attn(r"\\ \[x\)"), frags(&[(r"\ [x)", 1.0)]));
    assert_eq!(attn("[[x]]"), frags(&[("x", (1.0 / 1.1) * (1.0 / 1.1))]));
    assert_eq!(attn("a BREAK b"), frags(&[("a", 1.0), ("BREAK", -1.0), ("b", 1.0)]));
    assert_eq!(attn("BREAK BREAK"), frags(&[("", 1.0), ("BREAK", -1.0), ("", 1.0), ("BREAK", -1.0), ("", 1.0)]));
    // inside parentheses the marker is scaled too and stops being a BREAK (A1111 quirk, mirrored)
    assert_eq!(attn("(a BREAK b)"), frags(&[("a", 1.1), ("BREAK", -1.1), ("b", 1.1)]));
    assert_eq!(attn("aBREAK BREAKb"), frags(&[("aBREAK BREAKb", 1.0)]));
    // A1111 raises ValueError here; this parser keeps the malformed weight as text
    assert_eq!(attn("(a:1.2.3)"), frags(&[("a:1.2.3)", 1.1)]));
}

#[test]
fn empty_prompt_is_one_padded_chunk() {
    let (p, tags) = parse_tagged("").expect("parse");
    assert_eq!(p.chunks.len(), 1);
    assert_eq!(p.token_count, 0);
    let mut ids = [EOS; 77];
    ids[0] = BOS;
    assert_eq!(p.chunks[0].ids, ids);
    assert_eq!(p.chunks[0].weights, [1.0f32; 77]);
    assert!(tags.loras.is_empty() && tags.warnings.is_empty());
}

#[test]
fn short_prompt_matches_plain_tokenizer_and_fixture() {
    // prompt 1 of tokenizer_cases.json, no emphasis: the chunk is exactly transformers' 77 ids
    let text = "lowres, bad anatomy, worst quality";
    let p = parse_prompt(tok(), text).expect("parse");
    assert_eq!(p.chunks.len(), 1);
    assert_eq!(p.chunks[0].ids, tok().encode_77(text));
    assert_eq!(p.token_count, 8);
    assert_eq!(p.chunks[0].weights, [1.0f32; 77]);
}

#[test]
fn weights_follow_emphasis() {
    let p = parse_prompt(tok(), "(cat:1.5) dog [bird] ((fish))").expect("parse");
    let t = |s: &str| tok().encode(s);
    let (ids, weights) = content(&p, 0);
    let expected_ids: Vec<u32> = [t("cat"), t("dog"), t("bird"), t("fish")].concat();
    assert_eq!(ids, expected_ids);
    let w = |x: f64| x as f32;
    assert_eq!(weights, vec![w(1.5), w(1.0), w(1.0 / 1.1), w(1.1 * 1.1)]);
    assert_eq!(p.token_count, 4);
}

#[test]
fn escaped_brackets_are_literal_text() {
    let p = parse_prompt(tok(), r"\(cat\) \[dog\]").expect("parse");
    let (ids, weights) = content(&p, 0);
    assert_eq!(ids, tok().encode("(cat) [dog]"));
    assert!(weights.iter().all(|&w| w == 1.0));
}

#[test]
fn fragments_are_tokenized_separately() {
    // "(hot)dog" is "hot" + "dog" with different weights: no BPE merge across the boundary
    let p = parse_prompt(tok(), "(hot)dog").expect("parse");
    let (ids, weights) = content(&p, 0);
    assert_eq!(ids, [tok().encode("hot"), tok().encode("dog")].concat());
    assert_eq!(weights, vec![1.1f64 as f32, 1.0]);
    assert_ne!(ids, tok().encode("hotdog"));
}

#[test]
fn break_starts_a_new_chunk() {
    let p = parse_prompt(tok(), "a red cat BREAK a blue dog").expect("parse");
    assert_eq!(p.chunks.len(), 2);
    assert_eq!(content(&p, 0).0, tok().encode("a red cat"));
    assert_eq!(content(&p, 1).0, tok().encode("a blue dog"));
    assert_eq!(p.token_count, CHUNK_TOKENS + 3, "A1111 counts a closed chunk as 75");
    // lowercase or glued "break" is plain text
    assert_eq!(parse_prompt(tok(), "a break b").expect("parse").chunks.len(), 1);
    assert_eq!(parse_prompt(tok(), "aBREAK b").expect("parse").chunks.len(), 1);
    // BREAK at the start closes an empty chunk, as A1111 does
    let p = parse_prompt(tok(), "BREAK cat").expect("parse");
    assert_eq!(p.chunks.len(), 2);
    assert_eq!(content(&p, 0).0, Vec::<u32>::new());
    assert_eq!(content(&p, 1).0, tok().encode("cat"));
}

fn words(word: &str, n: usize) -> String {
    vec![word; n].join(" ")
}

#[test]
fn long_prompt_splits_into_75_token_chunks() {
    let cat = tok().encode("cat");
    assert_eq!(cat.len(), 1);
    let p = parse_prompt(tok(), &words("cat", 200)).expect("parse");
    assert_eq!(p.chunks.len(), 3);
    assert_eq!(content(&p, 0).0, vec![cat[0]; 75]);
    assert_eq!(content(&p, 1).0, vec![cat[0]; 75]);
    assert_eq!(content(&p, 2).0, vec![cat[0]; 50]);
    assert_eq!(p.token_count, 200);
    // exactly 75 tokens still fit one chunk
    assert_eq!(parse_prompt(tok(), &words("cat", 75)).expect("parse").chunks.len(), 1);
    assert_eq!(parse_prompt(tok(), &words("cat", 76)).expect("parse").chunks.len(), 2);
}

#[test]
fn chunk_break_backtracks_to_a_recent_comma() {
    let (cat, dog, comma) = (tok().encode("cat")[0], tok().encode("dog")[0], 267);
    // comma is token 71 of the chunk (index 70): 75 - 70 = 5 <= 20, so the 4 dogs after it move on
    let p = parse_prompt(tok(), &format!("{}, {}", words("cat", 70), words("dog", 10))).expect("parse");
    assert_eq!(p.chunks.len(), 2);
    let mut first = vec![cat; 70];
    first.push(comma);
    assert_eq!(content(&p, 0).0, first);
    assert_eq!(content(&p, 1).0, vec![dog; 10]);
    assert_eq!(p.token_count, 75 + 10);

    // comma at index 55: 75 - 55 = 20, still within the backtrack window
    let p = parse_prompt(tok(), &format!("{}, {}", words("cat", 55), words("dog", 30))).expect("parse");
    assert_eq!(content(&p, 0).0.len(), 56);
    assert_eq!(content(&p, 1).0, vec![dog; 30]);

    // comma at index 54: 21 tokens back, too far: the chunk is cut at 75 tokens
    let p = parse_prompt(tok(), &format!("{}, {}", words("cat", 54), words("dog", 30))).expect("parse");
    let mut first = vec![cat; 54];
    first.push(comma);
    first.extend(vec![dog; 20]);
    assert_eq!(content(&p, 0).0, first);
    assert_eq!(content(&p, 1).0, vec![dog; 10]);

    // weights travel with the relocated tokens
    let p = parse_prompt(tok(), &format!("{}, ({})", words("cat", 70), words("dog", 10))).expect("parse");
    let (ids, weights) = content(&p, 1);
    assert_eq!(ids, vec![dog; 10]);
    assert!(weights.iter().all(|&w| w == 1.1f64 as f32));
}

#[test]
fn lora_tags_are_extracted() {
    let (p, tags) =
        parse_tagged("<lora:foo:0.8> a cat, <lora:bar_v2:0.5:0.3> <lora:baz> <hypernet:h:1> <lyco:ly:-0.5>")
            .expect("parse");
    let lora =
        |name: &str, te: f32, unet: f32| LoraTag { name: name.into(), te_weight: te, unet_weight: unet, lbw: None };
    assert_eq!(
        tags.loras,
        vec![lora("foo", 0.8, 0.8), lora("bar_v2", 0.5, 0.3), lora("baz", 1.0, 1.0), lora("ly", -0.5, -0.5)]
    );
    assert_eq!(tags.warnings.len(), 1, "{:?}", tags.warnings);
    assert!(tags.warnings[0].contains("<hypernet:h:1>"), "{:?}", tags.warnings);
    assert_eq!(content(&p, 0).0, tok().encode("a cat,"));

    let ExtraNetworks { text, loras, warnings } =
        extract_extra_networks("x <lora:n:te=0.2:unet=0.7> y <lora:m:1:dyn=8> <notatag> <a:>").expect("extract");
    assert_eq!(text, "x  y  <notatag> <a:>");
    assert_eq!(loras, vec![lora("n", 0.2, 0.7), lora("m", 1.0, 1.0)]);
    assert!(warnings.len() == 1 && warnings[0].contains("dyn"), "{warnings:?}");

    // names may contain spaces and dots; tags inside emphasis leave the brackets behind
    let ExtraNetworks { text, loras, .. } = extract_extra_networks("(<lora:My LoRA v1.5:0.6>cat)").expect("extract");
    assert_eq!(text, "(cat)");
    assert_eq!(loras, vec![lora("My LoRA v1.5", 0.6, 0.6)]);
}

#[test]
fn malformed_lora_weights_are_errors_naming_the_tag() {
    for (prompt, tag) in [
        ("cat <lora:foo:abc>", "<lora:foo:abc>"),
        ("<lora:foo:0.5:x1>", "<lora:foo:0.5:x1>"),
        ("<lora:foo:te=?>", "<lora:foo:te=?>"),
        ("<lora:foo:inf>", "<lora:foo:inf>"),
        ("<lora::1>", "<lora::1>"),
    ] {
        let err = parse_tagged(prompt).expect_err(prompt).to_string();
        assert!(err.contains(tag), "error for {prompt:?} should name {tag}: {err}");
    }
}

#[test]
fn fixture_long_prompt_counts_like_a1111() {
    // prompt 9 of tokenizer_cases.json: 68 content tokens, no emphasis
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sd15-tiny/tokenizer_cases.json"))
            .expect("read cases");
    let json: serde_json::Value = serde_json::from_str(&text).expect("parse cases");
    let case = &json[9];
    let prompt = case["prompt"].as_str().expect("prompt");
    let ids77: Vec<u32> =
        case["ids_77"].as_array().expect("ids").iter().map(|v| v.as_u64().expect("id") as u32).collect();
    let p = parse_prompt(tok(), prompt).expect("parse");
    assert_eq!(p.chunks.len(), 1);
    assert_eq!(p.chunks[0].ids.to_vec(), ids77);
    assert_eq!(p.token_count, 68);
}

#[test]
fn fuzz_bracket_soup_never_panics() {
    let seed = std::env::var("LORAFUSE_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0xb4ac_u64);
    println!("seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let pieces = [
        "(",
        ")",
        "[",
        "]",
        ":",
        "\\",
        ":1.5)",
        ":-.)",
        "BREAK",
        " BREAK ",
        ",",
        " ",
        "cat",
        "<lora:",
        "<lora:x:1>",
        "<lora:x:",
        ">",
        "=",
        "é",
        "\n",
        "&amp;",
        ":1e9)",
        ":99999999999999999999)",
    ];
    for _ in 0..3000 {
        let mut s = String::new();
        for _ in 0..rng.random_range(0..60) {
            match rng.random_range(0..3) {
                0 => s.push(rng.random::<char>()),
                _ => s.push_str(pieces[rng.random_range(0..pieces.len())]),
            }
        }
        let _ = parse_attention(&s);
        if let Ok((p, _)) = parse_tagged(&s) {
            assert!(!p.chunks.is_empty(), "{s:?}");
            for i in 0..p.chunks.len() {
                content(&p, i);
            }
            // closed chunks count 75 each, the last one what it holds
            let n = p.chunks.len();
            assert!(p.token_count >= (n - 1) * CHUNK_TOKENS && p.token_count <= n * CHUNK_TOKENS, "{s:?}");
        }
    }
}
