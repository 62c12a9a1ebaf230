//! CTranslate2 Whisper -> whisper.cpp ggml, in Rust.
//!
//! The mapping follows whisper.cpp's `convert-pt-to-ggml.py` (names are the PyTorch
//! state-dict names, which whisper.cpp looks tensors up by) with what CTranslate2
//! changed undone: self-attention `linear_0` stacks q,k,v by rows and
//! cross-attention `linear_1` stacks k,v, so they are split; whisper has no key
//! bias (CTranslate2 stores zeros there) so none is written; conv biases become
//! (n, 1). Positional embeddings, conv biases and 1-D tensors are f32, every other
//! tensor f16, as whisper.cpp allocates them for ftype 1.

use std::collections::HashMap;
use std::io::Write;

use super::ct2::{Ct2Error, Ct2Model, Variable};
use super::ggml::{GgmlError, GgmlWriter, HParams, MelFilters, TensorType};

/// Regular (non-special) tokens whisper.cpp expects in the file; it adds the special
/// ones itself from n_vocab.
pub const REGULAR_TOKENS: usize = 50256;

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error(transparent)]
    Ct2(#[from] Ct2Error),
    #[error(transparent)]
    Ggml(#[from] GgmlError),
    #[error("tokenizer.json: {0}")]
    Tokenizer(String),
    #[error("not a Whisper model: {0}")]
    Model(String),
}

/// What a conversion produced, for reporting and verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Converted {
    pub hparams: HParams,
    pub tensors: usize,
    pub vocab: usize,
}

/// Converts a parsed model and its tokenizer.json text into a ggml file written to `out`.
pub fn convert<W: Write>(model: &Ct2Model<'_>, tokenizer_json: &str, out: W) -> Result<Converted, ConvertError> {
    let hparams = hparams(model)?;
    let vocab = vocab_from_tokenizer(tokenizer_json)?;
    let n_mels = usize::try_from(hparams.n_mels).map_err(|_| ConvertError::Model("negative n_mels".into()))?;
    let filters = mel_filters(16_000, 400, n_mels);
    let mut w = GgmlWriter::new(out, &hparams, &filters, &vocab)?;
    for (ct2, ggml) in [
        ("encoder/position_encodings/encodings", "encoder.positional_embedding"),
        ("encoder/conv1/weight", "encoder.conv1.weight"),
        ("encoder/conv1/bias", "encoder.conv1.bias"),
        ("encoder/conv2/weight", "encoder.conv2.weight"),
        ("encoder/conv2/bias", "encoder.conv2.bias"),
        ("encoder/layer_norm/gamma", "encoder.ln_post.weight"),
        ("encoder/layer_norm/beta", "encoder.ln_post.bias"),
        ("decoder/position_encodings/encodings", "decoder.positional_embedding"),
        ("decoder/embeddings/weight", "decoder.token_embedding.weight"),
        ("decoder/layer_norm/gamma", "decoder.ln.weight"),
        ("decoder/layer_norm/beta", "decoder.ln.bias"),
    ] {
        whole(&mut w, model.require(ct2)?, ggml)?;
    }
    for (side, layers) in [("encoder", hparams.n_audio_layer), ("decoder", hparams.n_text_layer)] {
        for i in 0..layers {
            let src = format!("{side}/layer_{i}");
            let dst = format!("{side}.blocks.{i}");
            let get = |rest: &str| model.require(&format!("{src}/{rest}"));
            norm(&mut w, model, &format!("{src}/self_attention/layer_norm"), &format!("{dst}.attn_ln"))?;
            let qkv_w = get("self_attention/linear_0/weight")?;
            let qkv_b = get("self_attention/linear_0/bias")?;
            split(
                &mut w,
                qkv_w,
                3,
                &[
                    Some(&format!("{dst}.attn.query.weight")),
                    Some(&format!("{dst}.attn.key.weight")),
                    Some(&format!("{dst}.attn.value.weight")),
                ],
            )?;
            split(
                &mut w,
                qkv_b,
                3,
                &[Some(&format!("{dst}.attn.query.bias")), None, Some(&format!("{dst}.attn.value.bias"))],
            )?;
            linear(&mut w, model, &format!("{src}/self_attention/linear_1"), &format!("{dst}.attn.out"))?;
            if side == "decoder" {
                norm(&mut w, model, &format!("{src}/attention/layer_norm"), &format!("{dst}.cross_attn_ln"))?;
                linear(&mut w, model, &format!("{src}/attention/linear_0"), &format!("{dst}.cross_attn.query"))?;
                let kv_w = get("attention/linear_1/weight")?;
                let kv_b = get("attention/linear_1/bias")?;
                split(
                    &mut w,
                    kv_w,
                    2,
                    &[Some(&format!("{dst}.cross_attn.key.weight")), Some(&format!("{dst}.cross_attn.value.weight"))],
                )?;
                split(&mut w, kv_b, 2, &[None, Some(&format!("{dst}.cross_attn.value.bias"))])?;
                linear(&mut w, model, &format!("{src}/attention/linear_2"), &format!("{dst}.cross_attn.out"))?;
            }
            norm(&mut w, model, &format!("{src}/ffn/layer_norm"), &format!("{dst}.mlp_ln"))?;
            linear(&mut w, model, &format!("{src}/ffn/linear_0"), &format!("{dst}.mlp.0"))?;
            linear(&mut w, model, &format!("{src}/ffn/linear_1"), &format!("{dst}.mlp.2"))?;
        }
    }
    let (_, tensors) = w.finish()?;
    Ok(Converted { hparams, tensors, vocab: vocab.len() })
}

/// The number of tensors a model with these hyperparameters has in whisper.cpp.
pub fn expected_tensors(h: &HParams) -> usize {
    // Per encoder block: attn_ln (2), q w+b, k w, v w+b, out w+b, mlp_ln (2), mlp.0 (2), mlp.2 (2) = 15;
    // a decoder block adds cross_attn_ln (2) and the same 7 attention tensors = 24.
    11 + 15 * h.n_audio_layer.max(0) as usize + 24 * h.n_text_layer.max(0) as usize
}

fn hparams(model: &Ct2Model<'_>) -> Result<HParams, ConvertError> {
    let dims = |name: &str| -> Result<Vec<usize>, ConvertError> { Ok(model.require(name)?.dims.clone()) };
    let int = |v: usize| i32::try_from(v).map_err(|_| ConvertError::Model(format!("dimension {v} too large")));
    let heads = |name: &str| -> Result<i32, ConvertError> {
        let v = model.require(name)?;
        let n = v.as_integer().ok_or_else(|| ConvertError::Model(format!("{name} is not an integer scalar")))?;
        i32::try_from(n).map_err(|_| ConvertError::Model(format!("{name} = {n}")))
    };
    let layers = |side: &str| {
        (0..).take_while(|i| model.get(&format!("{side}/layer_{i}/ffn/linear_0/weight")).is_some()).count()
    };
    let [audio_ctx, audio_state] = two(&dims("encoder/position_encodings/encodings")?, "encoder positions")?;
    let [text_ctx, text_state] = two(&dims("decoder/position_encodings/encodings")?, "decoder positions")?;
    let [n_vocab, _] = two(&dims("decoder/embeddings/weight")?, "token embedding")?;
    let conv1 = dims("encoder/conv1/weight")?;
    let n_mels = *conv1.get(1).ok_or_else(|| ConvertError::Model("conv1 weight has no input dimension".into()))?;
    Ok(HParams {
        n_vocab: int(n_vocab)?,
        n_audio_ctx: int(audio_ctx)?,
        n_audio_state: int(audio_state)?,
        n_audio_head: heads("encoder/num_heads")?,
        n_audio_layer: int(layers("encoder"))?,
        n_text_ctx: int(text_ctx)?,
        n_text_state: int(text_state)?,
        n_text_head: heads("decoder/num_heads")?,
        n_text_layer: int(layers("decoder"))?,
        n_mels: int(n_mels)?,
        ftype: 1,
    })
}

fn two(dims: &[usize], what: &str) -> Result<[usize; 2], ConvertError> {
    match dims {
        [a, b] => Ok([*a, *b]),
        _ => Err(ConvertError::Model(format!("{what} has shape {dims:?}, expected 2-D"))),
    }
}

/// The storage type whisper.cpp allocates for a tensor of this name and rank.
fn target_type(name: &str, rank: usize) -> TensorType {
    if rank < 2 || name.ends_with("positional_embedding") || name.starts_with("encoder.conv") && name.ends_with(".bias")
    {
        TensorType::F32
    } else {
        TensorType::F16
    }
}

fn encode(values: &[f32], ttype: TensorType) -> Vec<u8> {
    match ttype {
        TensorType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        TensorType::F16 => values.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect(),
    }
}

fn whole<W: Write>(w: &mut GgmlWriter<W>, v: &Variable<'_>, name: &str) -> Result<(), ConvertError> {
    let mut dims = v.dims.clone();
    if name.starts_with("encoder.conv") && name.ends_with(".bias") {
        dims.push(1);
    }
    let ttype = target_type(name, dims.len());
    // f16 -> f16 is a copy; converting through f32 would be lossless but slow.
    if ttype == TensorType::F16 && v.dtype == super::ct2::DType::F16 {
        w.tensor(name, &dims, ttype, v.data)?;
    } else {
        w.tensor(name, &dims, ttype, &encode(&v.to_f32()?, ttype))?;
    }
    Ok(())
}

/// Splits a row-stacked tensor into `parts` equal blocks of rows; `None` drops a block.
fn split<W: Write>(
    w: &mut GgmlWriter<W>,
    v: &Variable<'_>,
    parts: usize,
    names: &[Option<&str>],
) -> Result<(), ConvertError> {
    let rows = *v.dims.first().ok_or_else(|| ConvertError::Model(format!("{} is a scalar", v.name)))?;
    if rows % parts != 0 || names.len() != parts {
        return Err(ConvertError::Model(format!("{} has {rows} rows, not {parts} equal blocks", v.name)));
    }
    let mut dims = v.dims.clone();
    dims[0] = rows / parts;
    let block = v.data.len() / parts;
    for (i, name) in names.iter().enumerate() {
        let Some(name) = name else { continue };
        let part = super::ct2::Variable {
            name: v.name.clone(),
            dims: dims.clone(),
            dtype: v.dtype,
            data: &v.data[i * block..(i + 1) * block],
        };
        whole(w, &part, name)?;
    }
    Ok(())
}

fn linear<W: Write>(w: &mut GgmlWriter<W>, m: &Ct2Model<'_>, src: &str, dst: &str) -> Result<(), ConvertError> {
    whole(w, m.require(&format!("{src}/weight"))?, &format!("{dst}.weight"))?;
    whole(w, m.require(&format!("{src}/bias"))?, &format!("{dst}.bias"))
}

fn norm<W: Write>(w: &mut GgmlWriter<W>, m: &Ct2Model<'_>, src: &str, dst: &str) -> Result<(), ConvertError> {
    whole(w, m.require(&format!("{src}/gamma"))?, &format!("{dst}.weight"))?;
    whole(w, m.require(&format!("{src}/beta"))?, &format!("{dst}.bias"))
}

/// librosa's `filters.mel(sr, n_fft, n_mels)` with its defaults (Slaney mel scale,
/// Slaney area normalisation, fmax = sr/2), computed in f64 like librosa and stored
/// as f32: whisper's own `mel_filters.npz` is exactly this.
pub fn mel_filters(sr: u32, n_fft: usize, n_mels: usize) -> MelFilters {
    const F_SP: f64 = 200.0 / 3.0;
    const MIN_LOG_HZ: f64 = 1000.0;
    const MIN_LOG_MEL: f64 = MIN_LOG_HZ / F_SP;
    let logstep = 6.4f64.ln() / 27.0;
    let hz_to_mel = |f: f64| if f >= MIN_LOG_HZ { MIN_LOG_MEL + (f / MIN_LOG_HZ).ln() / logstep } else { f / F_SP };
    let mel_to_hz = |m: f64| if m >= MIN_LOG_MEL { MIN_LOG_HZ * (logstep * (m - MIN_LOG_MEL)).exp() } else { F_SP * m };
    let n_bins = n_fft / 2 + 1;
    let nyquist = f64::from(sr) / 2.0;
    let fft_freqs: Vec<f64> = (0..n_bins).map(|k| k as f64 * f64::from(sr) / n_fft as f64).collect();
    let max_mel = hz_to_mel(nyquist);
    let mel_f: Vec<f64> = (0..n_mels + 2).map(|i| mel_to_hz(max_mel * i as f64 / (n_mels + 1) as f64)).collect();
    let mut data = Vec::with_capacity(n_mels * n_bins);
    for i in 0..n_mels {
        let (lo, mid, hi) = (mel_f[i], mel_f[i + 1], mel_f[i + 2]);
        let enorm = 2.0 / (hi - lo);
        for &f in &fft_freqs {
            let lower = (f - lo) / (mid - lo);
            let upper = (hi - f) / (hi - mid);
            data.push((lower.min(upper).max(0.0) * enorm) as f32);
        }
    }
    MelFilters { n_mel: n_mels, n_fft: n_bins, data }
}

/// GPT-2's byte <-> printable-character table, inverted: the tokenizer's strings
/// spell raw bytes with these characters.
fn byte_decoder() -> HashMap<char, u8> {
    let mut printable: Vec<u32> = (u32::from('!')..=u32::from('~'))
        .chain(u32::from('¡')..=u32::from('¬'))
        .chain(u32::from('®')..=u32::from('ÿ'))
        .collect();
    let mut chars = printable.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !printable.contains(&b) {
            printable.push(b);
            chars.push(256 + n);
            n += 1;
        }
    }
    printable.iter().zip(&chars).filter_map(|(&b, &c)| Some((char::from_u32(c)?, u8::try_from(b).ok()?))).collect()
}

/// Regular tokens 0..50255 of a Hugging Face tokenizer.json as raw bytes, in id order.
pub fn vocab_from_tokenizer(json: &str) -> Result<Vec<Vec<u8>>, ConvertError> {
    let doc: serde_json::Value =
        serde_json::from_str(json).map_err(|e| ConvertError::Tokenizer(format!("not JSON: {e}")))?;
    let vocab = doc
        .pointer("/model/vocab")
        .and_then(|v| v.as_object())
        .ok_or_else(|| ConvertError::Tokenizer("no model.vocab object".into()))?;
    let decoder = byte_decoder();
    let mut tokens: Vec<Option<Vec<u8>>> = vec![None; REGULAR_TOKENS];
    for (text, id) in vocab {
        let Some(id) = id.as_u64().and_then(|i| usize::try_from(i).ok()) else {
            return Err(ConvertError::Tokenizer(format!("token {text:?} has a non-integer id")));
        };
        if id >= REGULAR_TOKENS {
            continue;
        }
        let bytes = text
            .chars()
            .map(|c| decoder.get(&c).copied())
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(|| ConvertError::Tokenizer(format!("token {id} ({text:?}) is not byte-level BPE")))?;
        tokens[id] = Some(bytes);
    }
    tokens
        .into_iter()
        .enumerate()
        .map(|(id, t)| t.ok_or_else(|| ConvertError::Tokenizer(format!("token id {id} is missing"))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::ct2::Ct2Writer;
    use super::super::ggml::read_summary;
    use super::*;

    /// A 1-layer Whisper-shaped model: state 4, 2 heads, 3 mels, 5 audio and 3 text
    /// positions, 6 tokens. Values encode their position so splits can be checked.
    fn tiny_model() -> Vec<u8> {
        let d = 4u32;
        let seq = |n: u32, base: f32| (0..n).map(|i| base + i as f32).collect::<Vec<f32>>();
        let mut w = Ct2Writer::new("WhisperSpec");
        w.i16_scalar("encoder/num_heads", 2)
            .i16_scalar("decoder/num_heads", 2)
            .f16("encoder/conv1/weight", &[d, 3, 3], &seq(d * 9, 0.0))
            .f16("encoder/conv1/bias", &[d], &seq(d, 0.0))
            .f16("encoder/conv2/weight", &[d, d, 3], &seq(d * d * 3, 0.0))
            .f16("encoder/conv2/bias", &[d], &seq(d, 0.0))
            .f16("encoder/position_encodings/encodings", &[5, d], &seq(5 * d, 0.0))
            .f16("encoder/layer_norm/gamma", &[d], &seq(d, 0.0))
            .f16("encoder/layer_norm/beta", &[d], &seq(d, 0.0))
            .f16("decoder/embeddings/weight", &[6, d], &seq(6 * d, 0.0))
            .f16("decoder/position_encodings/encodings", &[3, d], &seq(3 * d, 0.0))
            .f16("decoder/layer_norm/gamma", &[d], &seq(d, 0.0))
            .f16("decoder/layer_norm/beta", &[d], &seq(d, 0.0));
        for side in ["encoder", "decoder"] {
            let p = format!("{side}/layer_0");
            w.f16(&format!("{p}/self_attention/layer_norm/gamma"), &[d], &seq(d, 0.0))
                .f16(&format!("{p}/self_attention/layer_norm/beta"), &[d], &seq(d, 0.0))
                // Rows 0-3 are q (values 0..16), 4-7 k (100..), 8-11 v (200..).
                .f16(
                    &format!("{p}/self_attention/linear_0/weight"),
                    &[3 * d, d],
                    &[seq(d * d, 0.0), seq(d * d, 100.0), seq(d * d, 200.0)].concat(),
                )
                .f16(
                    &format!("{p}/self_attention/linear_0/bias"),
                    &[3 * d],
                    &[seq(d, 10.0), vec![0.0; 4], seq(d, 30.0)].concat(),
                )
                .f16(&format!("{p}/self_attention/linear_1/weight"), &[d, d], &seq(d * d, 0.0))
                .f16(&format!("{p}/self_attention/linear_1/bias"), &[d], &seq(d, 0.0))
                .f16(&format!("{p}/ffn/layer_norm/gamma"), &[d], &seq(d, 0.0))
                .f16(&format!("{p}/ffn/layer_norm/beta"), &[d], &seq(d, 0.0))
                .f16(&format!("{p}/ffn/linear_0/weight"), &[4 * d, d], &seq(4 * d * d, 0.0))
                .f16(&format!("{p}/ffn/linear_0/bias"), &[4 * d], &seq(4 * d, 0.0))
                .f16(&format!("{p}/ffn/linear_1/weight"), &[d, 4 * d], &seq(4 * d * d, 0.0))
                .f16(&format!("{p}/ffn/linear_1/bias"), &[d], &seq(d, 0.0));
        }
        let p = "decoder/layer_0/attention";
        w.f16(&format!("{p}/layer_norm/gamma"), &[d], &seq(d, 0.0))
            .f16(&format!("{p}/layer_norm/beta"), &[d], &seq(d, 0.0))
            .f16(&format!("{p}/linear_0/weight"), &[d, d], &seq(d * d, 0.0))
            .f16(&format!("{p}/linear_0/bias"), &[d], &seq(d, 0.0))
            .f16(&format!("{p}/linear_1/weight"), &[2 * d, d], &[seq(d * d, 500.0), seq(d * d, 600.0)].concat())
            .f16(&format!("{p}/linear_1/bias"), &[2 * d], &[vec![0.0; 4], seq(d, 70.0)].concat())
            .f16(&format!("{p}/linear_2/weight"), &[d, d], &seq(d * d, 0.0))
            .f16(&format!("{p}/linear_2/bias"), &[d], &seq(d, 0.0))
            .alias("decoder/projection/weight", "decoder/embeddings/weight");
        w.to_bytes()
    }

    fn tiny_tokenizer() -> String {
        // Ids 0..50255 must all be present; most are filler, a few are checked.
        let mut vocab = serde_json::Map::new();
        for id in 0..REGULAR_TOKENS {
            vocab.insert(format!("t{id}"), id.into());
        }
        vocab.insert("Ġdrain".into(), 7.into()); // "Ġ" is the space byte
        vocab.insert("Ċ".into(), 8.into()); // newline
        vocab.insert("Ã©".into(), 9.into()); // the two bytes of UTF-8 "é"
        vocab.insert("<|endoftext|>".into(), 50256.into());
        vocab.remove("t7");
        vocab.remove("t8");
        vocab.remove("t9");
        serde_json::json!({ "model": { "vocab": vocab } }).to_string()
    }

    fn f16_values(bytes: &[u8]) -> Vec<f32> {
        bytes.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect()
    }

    #[test]
    fn converts_a_synthetic_model_with_whisper_cpp_names_shapes_and_types() {
        let bytes = tiny_model();
        let model = Ct2Model::parse(&bytes).unwrap();
        let mut out = Vec::new();
        let c = convert(&model, &tiny_tokenizer(), &mut out).unwrap();
        let h = c.hparams;
        assert_eq!((h.n_vocab, h.n_audio_ctx, h.n_audio_state, h.n_audio_head, h.n_audio_layer), (6, 5, 4, 2, 1));
        assert_eq!(
            (h.n_text_ctx, h.n_text_state, h.n_text_head, h.n_text_layer, h.n_mels, h.ftype),
            (3, 4, 2, 1, 3, 1)
        );
        assert_eq!(c.tensors, expected_tensors(&h));
        let s = read_summary(std::io::Cursor::new(&out)).unwrap();
        assert_eq!(s.tensors.len(), c.tensors);
        assert_eq!(s.vocab.len(), REGULAR_TOKENS);
        assert_eq!(s.vocab[7], b" drain");
        assert_eq!(s.vocab[8], b"\n");
        assert_eq!(s.vocab[9], "é".as_bytes());
        assert_eq!((s.filters.n_mel, s.filters.n_fft), (3, 201));

        let t = |name: &str| s.tensor(name).unwrap_or_else(|| panic!("no tensor {name}")).clone();
        use TensorType::{F16, F32};
        for (name, dims, ttype) in [
            ("encoder.conv1.weight", vec![4, 3, 3], F16),
            ("encoder.conv1.bias", vec![4, 1], F32),
            ("encoder.conv2.bias", vec![4, 1], F32),
            ("encoder.positional_embedding", vec![5, 4], F32),
            ("decoder.positional_embedding", vec![3, 4], F32),
            ("decoder.token_embedding.weight", vec![6, 4], F16),
            ("encoder.ln_post.weight", vec![4], F32),
            ("decoder.ln.bias", vec![4], F32),
            ("encoder.blocks.0.attn.query.weight", vec![4, 4], F16),
            ("encoder.blocks.0.attn.key.weight", vec![4, 4], F16),
            ("encoder.blocks.0.attn.value.bias", vec![4], F32),
            ("encoder.blocks.0.attn_ln.weight", vec![4], F32),
            ("encoder.blocks.0.mlp.0.weight", vec![16, 4], F16),
            ("encoder.blocks.0.mlp.2.weight", vec![4, 16], F16),
            ("decoder.blocks.0.cross_attn.key.weight", vec![4, 4], F16),
            ("decoder.blocks.0.cross_attn.value.bias", vec![4], F32),
            ("decoder.blocks.0.cross_attn_ln.bias", vec![4], F32),
            ("decoder.blocks.0.cross_attn.out.weight", vec![4, 4], F16),
        ] {
            let info = t(name);
            assert_eq!((info.dims, info.ttype), (dims, ttype), "{name}");
        }
        for no_key_bias in
            ["encoder.blocks.0.attn.key.bias", "decoder.blocks.0.attn.key.bias", "decoder.blocks.0.cross_attn.key.bias"]
        {
            assert!(s.tensor(no_key_bias).is_none(), "{no_key_bias} must not be written");
        }
        assert!(s.tensors.iter().all(|t| !t.name.contains("projection")));
    }

    /// Walks the file to a named tensor's data (the summary skips data).
    fn tensor_data<'a>(file: &'a [u8], summary: &super::super::ggml::GgmlSummary, name: &str) -> &'a [u8] {
        let header =
            4 + 44 + 8 + summary.filters.data.len() * 4 + 4 + summary.vocab.iter().map(|t| 4 + t.len()).sum::<usize>();
        let mut pos = header;
        for t in &summary.tensors {
            pos += 12 + 4 * t.dims.len() + t.name.len();
            let n = t.dims.iter().product::<usize>() * t.ttype.size();
            if t.name == name {
                return &file[pos..pos + n];
            }
            pos += n;
        }
        panic!("no {name}");
    }

    #[test]
    fn stacked_projections_are_split_by_rows() {
        let bytes = tiny_model();
        let model = Ct2Model::parse(&bytes).unwrap();
        let mut out = Vec::new();
        convert(&model, &tiny_tokenizer(), &mut out).unwrap();
        let s = read_summary(std::io::Cursor::new(&out)).unwrap();
        let first = |name: &str| f16_values(tensor_data(&out, &s, name))[0];
        assert_eq!(first("decoder.blocks.0.attn.query.weight"), 0.0);
        assert_eq!(first("decoder.blocks.0.attn.key.weight"), 100.0);
        assert_eq!(first("decoder.blocks.0.attn.value.weight"), 200.0);
        assert_eq!(first("decoder.blocks.0.cross_attn.key.weight"), 500.0);
        assert_eq!(first("decoder.blocks.0.cross_attn.value.weight"), 600.0);
        let f32s = |name: &str| -> Vec<f32> {
            tensor_data(&out, &s, name).chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
        };
        assert_eq!(f32s("encoder.blocks.0.attn.query.bias"), vec![10.0, 11.0, 12.0, 13.0]);
        assert_eq!(f32s("encoder.blocks.0.attn.value.bias"), vec![30.0, 31.0, 32.0, 33.0]);
        assert_eq!(f32s("decoder.blocks.0.cross_attn.value.bias"), vec![70.0, 71.0, 72.0, 73.0]);
        assert_eq!(f32s("encoder.conv1.bias"), vec![0.0, 1.0, 2.0, 3.0]);
    }

    #[test]
    fn mel_filters_match_librosa() {
        let f = mel_filters(16_000, 400, 80);
        assert_eq!((f.n_mel, f.n_fft, f.data.len()), (80, 201, 80 * 201));
        // librosa.filters.mel(sr=16000, n_fft=400, n_mels=80)[0, 1] (whisper's mel_filters.npz).
        assert!((f.data[1] - 0.024_862_59).abs() < 1e-6, "{}", f.data[1]);
        assert_eq!(f.data[0], 0.0);
        // Every filter is a non-empty triangle; the last one reaches the top bins.
        for m in 0..80 {
            assert!(f.data[m * 201..(m + 1) * 201].iter().any(|&v| v > 0.0), "filter {m} empty");
        }
    }

    #[test]
    fn a_missing_tensor_is_an_error() {
        let mut w = Ct2Writer::new("WhisperSpec");
        w.i16_scalar("encoder/num_heads", 2);
        let bytes = w.to_bytes();
        let model = Ct2Model::parse(&bytes).unwrap();
        assert!(convert(&model, &tiny_tokenizer(), Vec::new()).is_err());
    }
}
