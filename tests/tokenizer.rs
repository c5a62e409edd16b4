//! CLIP tokenizer vs transformers' CLIPTokenizer (+ftfy): every case of
//! `tests/fixtures/sd15-tiny/tokenizer_cases.json` must match exactly, for the embedded vocabulary
//! and for the fixture's diffusers `tokenizer/` folder.

use std::path::PathBuf;

use lorafuse::models::clip::tokenizer::{normalize, Tokenizer, BOS, EOS};
use rand::{Rng, SeedableRng};

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd15-tiny").join(rel)
}

struct Case {
    prompt: String,
    untruncated: Vec<u32>,
    ids_77: Vec<u32>,
}

fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(fixture("tokenizer_cases.json")).expect("read tokenizer_cases.json");
    let json: serde_json::Value = serde_json::from_str(&text).expect("parse tokenizer_cases.json");
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array().expect("id list").iter().map(|x| x.as_u64().expect("id") as u32).collect()
    };
    json.as_array()
        .expect("case list")
        .iter()
        .map(|c| Case {
            prompt: c["prompt"].as_str().expect("prompt").to_string(),
            untruncated: ids(&c["ids_untruncated"]),
            ids_77: ids(&c["ids_77"]),
        })
        .collect()
}

fn from_folder() -> Tokenizer {
    Tokenizer::from_files(&fixture("model/tokenizer/vocab.json"), &fixture("model/tokenizer/merges.txt"))
        .expect("load fixture tokenizer folder")
}

/// Every case, none skipped: A1111 syntax characters (`(`, `[`, `<`) are plain text to the
/// tokenizer, as to transformers; only `prompt.rs` gives them a meaning.
fn check_all_cases(tok: &Tokenizer, label: &str) {
    let cases = cases();
    assert_eq!(cases.len(), 10, "fixture case count");
    assert!(cases.iter().any(|c| c.prompt.contains(['(', '[', '<'])), "the fixture covers syntax characters");
    for c in &cases {
        assert_eq!(tok.encode_with_special(&c.prompt), c.untruncated, "{label}: untruncated ids of {:?}", c.prompt);
        assert_eq!(tok.encode_77(&c.prompt).to_vec(), c.ids_77, "{label}: 77 ids of {:?}", c.prompt);
        let content = &c.untruncated[1..c.untruncated.len() - 1];
        assert_eq!(tok.pad_77(content).to_vec(), c.ids_77, "{label}: pad_77 of {:?}", c.prompt);
    }
}

#[test]
fn embedded_matches_every_fixture_case() {
    let tok = Tokenizer::embedded().expect("embedded tokenizer");
    assert_eq!(tok.vocab_size(), 49408);
    assert_eq!((tok.bos(), tok.eos()), (BOS, EOS));
    assert_eq!((BOS, EOS), (49406, 49407));
    check_all_cases(tok, "embedded");
}

#[test]
fn folder_matches_every_fixture_case_and_the_embedded_vocab() {
    let folder = from_folder();
    check_all_cases(&folder, "from_files");
    let embedded = Tokenizer::embedded().expect("embedded tokenizer");
    assert_eq!(folder.vocab_size(), embedded.vocab_size());
    for t in ["!", "!</w>", ",</w>", "a</w>", "ā", "photo</w>", "<|startoftext|>", "<|endoftext|>", "ðŁĺĤ</w>"] {
        assert_eq!(folder.token_id(t), embedded.token_id(t), "id of {t:?}");
    }
    // every id decodes to the same token string in both vocabularies
    for id in 0..49408u32 {
        assert_eq!(folder.decode(&[id]), embedded.decode(&[id]), "decode of id {id}");
    }
    let extra = [
        "a photo of a cat",
        "Ｆｕｌｌｗｉｄｔｈ, ﬁre & ice &amp; don\u{2019}t",
        "😀🎨 emoji and ÿ",
        "<|endoftext|> special <|startoftext|>",
    ];
    for p in extra {
        assert_eq!(folder.encode(p), embedded.encode(p), "ids of {p:?}");
    }
}

#[test]
fn spec_test_vectors() {
    let tok = Tokenizer::embedded().expect("embedded tokenizer");
    // docs/formats.md §4.1, derived with OpenAI's simple_tokenizer
    assert_eq!(tok.encode("a photo of a cat"), [320, 1125, 539, 320, 2368]);
    assert_eq!(tok.encode("A  Photo of a CAT!"), [320, 1125, 539, 320, 2368, 256]);
    assert_eq!(tok.encode("masterpiece, best quality, 1girl"), [12066, 267, 949, 3027, 267, 272, 1611]);
    assert_eq!(tok.encode("an astronaut riding a horse"), [550, 18376, 6765, 320, 4558]);
    assert_eq!(tok.encode("(red:1.2)"), [263, 736, 281, 272, 269, 273, 264]);
    assert_eq!(tok.token_id(",</w>"), Some(267));
    assert_eq!(tok.token_id("!"), Some(0));
    assert_eq!(tok.encode(""), Vec::<u32>::new());
    assert_eq!(tok.encode_with_special("   \n\t "), [BOS, EOS]);
}

#[test]
fn special_token_text_maps_to_special_ids() {
    let tok = Tokenizer::embedded().expect("embedded tokenizer");
    let cat = tok.encode("cat");
    let mut expected = vec![BOS];
    expected.extend(&cat);
    expected.push(EOS);
    assert_eq!(tok.encode("<|startoftext|>cat<|endoftext|>"), expected);
    assert_eq!(tok.encode("<|ENDOFTEXT|>"), [EOS]);
}

#[test]
fn ftfy_normalisation_steps() {
    let tok = Tokenizer::embedded().expect("embedded tokenizer");
    let same = |a: &str, b: &str| assert_eq!(tok.encode(a), tok.encode(b), "{a:?} vs {b:?}");
    same("salt &amp; pepper", "salt & pepper");
    same("&lt;3 &quot;hi&quot;", "<3 \"hi\"");
    same("&amp;amp;", "&"); // ftfy repeats its fixes until nothing changes
    same("P&EACUTE;REZ &eacute; &#233; &#xE9;", "pérez é é é");
    same("BUNDESSTRA&SZLIG;E", "bundesstrasse");
    // not entities, or not a spelling ftfy accepts: left as written
    assert_eq!(normalize("&#59; &bogus; &nTILDE; &#12ab;"), "&#59; &bogus; &ntilde; &#12ab;");
    // a literal '<' means "this is HTML": entities stay as written from that line on
    assert_eq!(normalize("<b> &amp;"), "<b> &amp;");
    assert_eq!(normalize("&amp;\n<b> &amp;"), "& <b> &amp;");
    same("don\u{2019}t \u{201C}quoted\u{201D}", "don't \"quoted\"");
    same("ＬＯＵＤ　ＮＯＩＳＥＳ，ｈｉ！", "loud noises,hi!");
    same("ﬁre ﬂower Ĳssel ǲenan ǳ ǆ", "fire flower ijssel dzenan dz dž");
    same("cafe\u{301}", "caf\u{e9}");
    same("a\r\nb\u{2028}c", "a b c");
    same("tab\u{0}null\u{7}bell\u{feff}", "tabnullbell");
    same("\u{1b}[31mred\u{1b}[0m", "red");
    same("\u{93}c1\u{94}", "\"c1\"");
    assert_eq!(normalize("  Multiple   spaces\tand\nnewlines   "), "multiple spaces and newlines");
    assert_eq!(normalize("ÉCOLE Über STRASSE ΣΑΣ"), "école über strasse σας");
}

#[test]
fn decode_round_trips_ascii() {
    let tok = Tokenizer::embedded().expect("embedded tokenizer");
    for p in ["a photo of a cat", "masterpiece best quality 1girl", "an extremely detailed castle at sunset"] {
        let ids = tok.encode(p);
        assert_eq!(tok.decode(&ids), p.replace("1girl", "1 girl"), "decode of {p:?}");
    }
    for c in cases() {
        let ids = tok.encode(&c.prompt);
        let text = tok.decode(&ids);
        assert_eq!(tok.encode(&text), ids, "re-encoding the decoded text of {:?} ({text:?})", c.prompt);
    }
    assert_eq!(tok.decode(&tok.encode_with_special("cat")), "<|startoftext|>cat <|endoftext|>");
    assert_eq!(tok.decode(&[u32::MAX, 2368]), "cat", "unknown ids are skipped");
}

#[test]
fn non_ascii_round_trips_through_bytes() {
    let tok = Tokenizer::embedded().expect("embedded tokenizer");
    for p in ["ホタル", "巨树森林背景", "café naïve", "😀🎨"] {
        let ids = tok.encode(p);
        assert_eq!(tok.decode(&ids), p, "decode of {p:?} ({ids:?})");
    }
}

#[test]
fn from_files_reports_missing_and_malformed_files() {
    let missing = fixture("model/tokenizer/nope.json");
    let err = Tokenizer::from_files(&missing, &fixture("model/tokenizer/merges.txt")).unwrap_err().to_string();
    assert!(err.contains("nope.json"), "{err}");
    let dir = std::env::temp_dir().join(format!("lorafuse-tok-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let bad_merges = dir.join("merges.txt");
    std::fs::write(&bad_merges, "#version: 0.2\ni n\nthree parts here\n").expect("write merges");
    let err = Tokenizer::from_files(&fixture("model/tokenizer/vocab.json"), &bad_merges).unwrap_err().to_string();
    assert!(err.contains("merge line 3") && err.contains("three parts here"), "{err}");
    let bad_vocab = dir.join("vocab.json");
    std::fs::write(&bad_vocab, r#"{"a": 0}"#).expect("write vocab");
    let err = Tokenizer::from_files(&bad_vocab, &fixture("model/tokenizer/merges.txt")).unwrap_err().to_string();
    assert!(err.contains("<|startoftext|>"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn fuzz_random_text_never_panics() {
    let tok = Tokenizer::embedded().expect("embedded tokenizer");
    let seed = std::env::var("LORAFUSE_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_u64);
    println!("seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let pieces = ["&", "&amp;", "&#", ";", "<", "|", "'s", " ", "\n", "\u{1b}[", "\u{85}", "ﬁ", "Ａ", "\u{301}"];
    for _ in 0..2000 {
        let len = rng.random_range(0..40);
        let mut s = String::new();
        for _ in 0..len {
            match rng.random_range(0..4) {
                0 => s.push_str(pieces[rng.random_range(0..pieces.len())]),
                1 => s.push(char::from(rng.random_range(0x20u8..0x7f))),
                _ => s.push(rng.random::<char>()),
            }
        }
        let ids = tok.encode(&s);
        assert!(ids.iter().all(|&id| id < 49408), "id out of range for {s:?}");
        let _ = tok.decode(&ids);
        let padded = tok.encode_77(&s);
        assert_eq!((padded[0], padded[76]), (BOS, EOS));
    }
}

/// A lone character is one pre-token of one byte, so CLIP's BPE can only give `char</w>`: checks
/// every printable ASCII character, A1111's `( ) [ ] \\ < > :` among them, alone and in runs
/// where the pattern keeps them apart (`[^\\s\\p{L}\\p{N}]+` stops at letters and spaces).
#[test]
fn syntax_characters_are_plain_text() {
    let tok = Tokenizer::embedded().expect("embedded tokenizer");
    for c in (b'!'..=b'~').map(char::from).filter(|c| !c.is_ascii_alphanumeric()) {
        let id = tok.token_id(&format!("{c}</w>")).expect("byte token");
        assert_eq!(tok.encode(&c.to_string()), [id], "{c:?}");
        assert_eq!(tok.encode_with_special(&format!("a{c} b")), [BOS, 320, id, 321, EOS], "{c:?}");
    }
    let id = |t: &str| tok.token_id(t).expect(t);
    assert_eq!(tok.encode("a\\b"), [id("a</w>"), id("\\</w>"), id("b</w>")]);
    assert_eq!(
        tok.encode("\\( x \\)"),
        tok.encode("\\(").into_iter().chain(tok.encode("x")).chain(tok.encode("\\)")).collect::<Vec<_>>()
    );
}
