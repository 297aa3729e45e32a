//! Checks an uploaded adapter without loading it: `adapter_config.json` against the job, and the
//! `adapter_model.safetensors` header (8-byte length, then JSON) against the config and the base
//! model's dimensions — tensor names, shapes, dtypes and byte ranges. Pure; the finalisation
//! task reads the bytes.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use crate::training::ModelShape;

/// Largest safetensors header accepted (a 70B adapter's is well under 1 MB).
pub const MAX_HEADER: u64 = 16 << 20;

/// Why an adapter was refused: the job fails with `code` and `message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Rejected {
    pub code: &'static str,
    pub message: String,
}

fn corrupt(message: impl Into<String>) -> Rejected {
    Rejected {
        code: "artifact_corrupt",
        message: message.into(),
    }
}

fn mismatch(message: impl Into<String>) -> Rejected {
    Rejected {
        code: "artifact_mismatch",
        message: message.into(),
    }
}

/// What the job asked for.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// The base model as the worker loaded it (the catalog's `source`).
    pub base_model: &'a str,
    pub rank: u32,
    pub alpha: u32,
    pub shape: Option<ModelShape>,
}

/// The fields of PEFT's `adapter_config.json` that matter here.
#[derive(Debug, Clone, Deserialize)]
pub struct AdapterConfig {
    pub base_model_name_or_path: Option<String>,
    pub peft_type: Option<String>,
    pub r: u32,
    pub lora_alpha: f64,
    #[serde(default)]
    pub target_modules: TargetModules,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(untagged)]
pub enum TargetModules {
    List(BTreeSet<String>),
    Pattern(String),
    #[default]
    None,
}

pub fn parse_config(bytes: &[u8]) -> Result<AdapterConfig, Rejected> {
    serde_json::from_slice(bytes).map_err(|e| {
        corrupt(format!(
            "adapter_config.json is not a PEFT adapter config: {e}"
        ))
    })
}

/// Checks the config against the job.
pub fn check_config(config: &AdapterConfig, expected: &Expected<'_>) -> Result<(), Rejected> {
    if config.peft_type.as_deref().is_some_and(|t| t != "LORA") {
        return Err(mismatch(format!(
            "adapter_config.json has peft_type {:?}, not LORA",
            config.peft_type.as_deref().unwrap_or_default()
        )));
    }
    if config.base_model_name_or_path.as_deref() != Some(expected.base_model) {
        return Err(mismatch(format!(
            "adapter_config.json names the base model {:?}; the job trained {}",
            config.base_model_name_or_path.as_deref().unwrap_or(""),
            expected.base_model
        )));
    }
    if config.r != expected.rank {
        return Err(mismatch(format!(
            "adapter_config.json has rank r = {}; the job asked for {}",
            config.r, expected.rank
        )));
    }
    if (config.lora_alpha - f64::from(expected.alpha)).abs() > 1e-9 {
        return Err(mismatch(format!(
            "adapter_config.json has lora_alpha = {}; the job asked for {}",
            config.lora_alpha, expected.alpha
        )));
    }
    match &config.target_modules {
        TargetModules::List(list) if !list.is_empty() => Ok(()),
        _ => Err(mismatch(
            "adapter_config.json lists no target modules: the adapter would change nothing",
        )),
    }
}

/// One tensor of a safetensors header.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TensorInfo {
    pub dtype: String,
    pub shape: Vec<u64>,
    pub data_offsets: [u64; 2],
}

/// The header's length from the file's first 8 bytes (little-endian), checked against the file.
pub fn header_len(first8: &[u8], file_size: u64) -> Result<u64, Rejected> {
    let bytes: [u8; 8] = first8
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            corrupt("adapter_model.safetensors is shorter than its 8-byte header length")
        })?;
    let n = u64::from_le_bytes(bytes);
    if n == 0 || n > MAX_HEADER || 8 + n > file_size {
        return Err(corrupt(format!(
            "adapter_model.safetensors declares a {n}-byte header in a {file_size}-byte file: it is truncated or not safetensors"
        )));
    }
    Ok(n)
}

fn dtype_size(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "F64" | "I64" | "U64" => 8,
        "F32" | "I32" | "U32" => 4,
        "F16" | "BF16" | "I16" | "U16" => 2,
        "I8" | "U8" | "BOOL" | "F8_E4M3" | "F8_E5M2" => 1,
        _ => return None,
    })
}

/// Parses the header JSON and checks every tensor's byte range: inside the data section, sized
/// by its dtype and shape, together covering the data section exactly.
pub fn parse_header(
    json: &[u8],
    header_len: u64,
    file_size: u64,
) -> Result<BTreeMap<String, TensorInfo>, Rejected> {
    let mut raw: BTreeMap<String, serde_json::Value> = serde_json::from_slice(json)
        .map_err(|e| corrupt(format!("the safetensors header is not valid JSON: {e}")))?;
    raw.remove("__metadata__");
    let data_len = file_size - 8 - header_len;
    let mut tensors = BTreeMap::new();
    let mut covered = 0u64;
    for (name, value) in raw {
        let info: TensorInfo = serde_json::from_value(value)
            .map_err(|e| corrupt(format!("tensor {name} in the safetensors header: {e}")))?;
        let size = dtype_size(&info.dtype)
            .ok_or_else(|| corrupt(format!("tensor {name} has an unknown dtype {}", info.dtype)))?;
        let [start, end] = info.data_offsets;
        let expected = info
            .shape
            .iter()
            .try_fold(size, |acc, d| acc.checked_mul(*d));
        if start > end || end > data_len || Some(end - start) != expected {
            return Err(corrupt(format!(
                "tensor {name} ({} {:?}) claims bytes {start}..{end} of a {data_len}-byte data section: the file is truncated or corrupt",
                info.dtype, info.shape
            )));
        }
        covered += end - start;
        tensors.insert(name, info);
    }
    if tensors.is_empty() {
        return Err(corrupt("adapter_model.safetensors holds no tensors"));
    }
    if covered != data_len {
        return Err(corrupt(format!(
            "the tensors cover {covered} of the {data_len} data bytes: the file is corrupt"
        )));
    }
    Ok(tensors)
}

/// The in/out widths a LoRA on `module` must have for a model of `shape`.
fn module_dims(module: &str, shape: &ModelShape) -> Option<(u64, u64)> {
    let (h, i, kv) = (
        u64::from(shape.hidden),
        u64::from(shape.intermediate),
        u64::from(shape.kv),
    );
    Some(match module {
        "q_proj" | "o_proj" => (h, h),
        "k_proj" | "v_proj" => (h, kv),
        "gate_proj" | "up_proj" => (h, i),
        "down_proj" => (i, h),
        "lm_head" => (h, u64::from(shape.vocab)),
        _ => return None,
    })
}

/// Checks the tensors against the config (every tensor a LoRA A or B of a targeted module, with
/// the config's rank) and, when the base model's dimensions are known, its layers and widths.
pub fn check_tensors(
    tensors: &BTreeMap<String, TensorInfo>,
    config: &AdapterConfig,
    shape: Option<ModelShape>,
) -> Result<(), Rejected> {
    let TargetModules::List(targets) = &config.target_modules else {
        return Err(mismatch("adapter_config.json lists no target modules"));
    };
    let r = u64::from(config.r);
    let mut found: BTreeSet<(u64, String)> = BTreeSet::new();
    for (name, info) in tensors {
        let (prefix, kind) = if let Some(p) = name.strip_suffix(".lora_A.weight") {
            (p, 'A')
        } else if let Some(p) = name.strip_suffix(".lora_B.weight") {
            (p, 'B')
        } else {
            return Err(mismatch(format!(
                "{name} is not a LoRA weight (…lora_A.weight or …lora_B.weight)"
            )));
        };
        let module = prefix.rsplit('.').next().unwrap_or_default();
        if !targets.contains(module) {
            return Err(mismatch(format!(
                "{name} adapts {module}, which adapter_config.json does not target"
            )));
        }
        if info.shape.len() != 2 {
            return Err(mismatch(format!(
                "{name} has shape {:?}, not a matrix",
                info.shape
            )));
        }
        let (rows, cols) = (info.shape[0], info.shape[1]);
        let (rank_dim, width) = if kind == 'A' {
            (rows, cols)
        } else {
            (cols, rows)
        };
        if rank_dim != r {
            return Err(mismatch(format!(
                "{name} has shape {:?}: its rank is {rank_dim}, the config says r = {r}",
                info.shape
            )));
        }
        let layer = prefix
            .split('.')
            .zip(prefix.split('.').skip(1))
            .find(|(a, _)| *a == "layers")
            .and_then(|(_, n)| n.parse::<u64>().ok());
        if let Some(shape) = shape {
            if let Some(layer) = layer
                && layer >= u64::from(shape.layers)
            {
                return Err(mismatch(format!(
                    "{name} is in layer {layer}; the base model has {} layers",
                    shape.layers
                )));
            }
            if let Some((input, output)) = module_dims(module, &shape) {
                let expected = if kind == 'A' { input } else { output };
                if width != expected {
                    return Err(mismatch(format!(
                        "{name} has shape {:?}; the base model's {module} needs width {expected}",
                        info.shape
                    )));
                }
            }
        }
        if let Some(layer) = layer {
            found.insert((layer, format!("{module}.{kind}")));
        }
    }
    if let Some(shape) = shape {
        // Per-layer modules: every layer must have both matrices of each.
        let named: Vec<&String> = targets
            .iter()
            .filter(|t| *t != "lm_head" && module_dims(t, &shape).is_some())
            .collect();
        let expected = u64::from(shape.layers) * named.len() as u64 * 2;
        if !named.is_empty() && (found.len() as u64) < expected {
            return Err(mismatch(format!(
                "the adapter holds {} of the {expected} LoRA matrices its config implies ({} layers × {} modules × A and B)",
                found.len(),
                shape.layers,
                named.len()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEMO: ModelShape = ModelShape {
        hidden: 64,
        intermediate: 128,
        layers: 2,
        kv: 32,
        vocab: 768,
    };

    fn config(targets: &[&str]) -> AdapterConfig {
        AdapterConfig {
            base_model_name_or_path: Some("tiny-random-llama".into()),
            peft_type: Some("LORA".into()),
            r: 4,
            lora_alpha: 8.0,
            target_modules: TargetModules::List(targets.iter().map(|s| s.to_string()).collect()),
        }
    }

    /// A safetensors file of the demo model's q/v adapter, as bytes.
    fn file(tensors: &[(&str, [u64; 2])]) -> Vec<u8> {
        let mut header = serde_json::Map::new();
        header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
        let mut offset = 0u64;
        for (name, shape) in tensors {
            let len = shape[0] * shape[1] * 4;
            header.insert(
                (*name).into(),
                serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + len]}),
            );
            offset += len;
        }
        let json = serde_json::to_vec(&header).unwrap();
        let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
        bytes.extend(json);
        bytes.extend(vec![0u8; offset as usize]);
        bytes
    }

    fn demo_tensors() -> Vec<(String, [u64; 2])> {
        let mut t = vec![];
        for layer in 0..2 {
            let p = format!("base_model.model.model.layers.{layer}.self_attn");
            t.push((format!("{p}.q_proj.lora_A.weight"), [4, 64]));
            t.push((format!("{p}.q_proj.lora_B.weight"), [64, 4]));
            t.push((format!("{p}.v_proj.lora_A.weight"), [4, 64]));
            t.push((format!("{p}.v_proj.lora_B.weight"), [32, 4]));
        }
        t
    }

    fn check(bytes: &[u8], config: &AdapterConfig) -> Result<(), Rejected> {
        let n = header_len(bytes, bytes.len() as u64)?;
        let json = bytes
            .get(8..8 + n as usize)
            .ok_or_else(|| corrupt("short"))?;
        let tensors = parse_header(json, n, bytes.len() as u64)?;
        check_tensors(&tensors, config, Some(DEMO))
    }

    fn as_refs(t: &[(String, [u64; 2])]) -> Vec<(&str, [u64; 2])> {
        t.iter().map(|(n, s)| (n.as_str(), *s)).collect()
    }

    #[test]
    fn a_good_adapter_passes() {
        let bytes = file(&as_refs(&demo_tensors()));
        assert_eq!(check(&bytes, &config(&["q_proj", "v_proj"])), Ok(()));
        // The demo's adapter on its output head: hidden in, vocabulary out.
        let mut with_head = demo_tensors();
        with_head.push(("base_model.model.lm_head.lora_A.weight".into(), [4, 64]));
        with_head.push(("base_model.model.lm_head.lora_B.weight".into(), [768, 4]));
        let cfg = config(&["q_proj", "v_proj", "lm_head"]);
        assert_eq!(check(&file(&as_refs(&with_head)), &cfg), Ok(()));
        with_head.last_mut().unwrap().1 = [512, 4];
        assert!(
            check(&file(&as_refs(&with_head)), &cfg)
                .unwrap_err()
                .message
                .contains("needs width 768")
        );
    }

    #[test]
    fn a_truncated_file_is_corrupt() {
        let bytes = file(&as_refs(&demo_tensors()));
        let short = &bytes[..bytes.len() - 100];
        assert_eq!(
            check(short, &config(&["q_proj", "v_proj"]))
                .unwrap_err()
                .code,
            "artifact_corrupt"
        );
        assert_eq!(
            header_len(&bytes[..5], 5).unwrap_err().code,
            "artifact_corrupt"
        );
        let mut huge = bytes.clone();
        huge[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(
            check(&huge, &config(&["q_proj", "v_proj"]))
                .unwrap_err()
                .message
                .contains("truncated or not safetensors")
        );
    }

    #[test]
    fn tensors_that_disagree_with_the_config_or_the_model_are_refused() {
        let cfg = config(&["q_proj", "v_proj"]);
        let mut wrong_width = demo_tensors();
        wrong_width[3].1 = [64, 4]; // v_proj's B must be kv = 32 wide
        let err = check(&file(&as_refs(&wrong_width)), &cfg).unwrap_err();
        assert_eq!(err.code, "artifact_mismatch");
        assert!(err.message.contains("needs width 32"), "{}", err.message);

        let mut wrong_rank = demo_tensors();
        wrong_rank[0].1 = [8, 64];
        assert!(
            check(&file(&as_refs(&wrong_rank)), &cfg)
                .unwrap_err()
                .message
                .contains("the config says r = 4")
        );
        let untargeted = check(&file(&as_refs(&demo_tensors())), &config(&["q_proj"]));
        assert!(untargeted.unwrap_err().message.contains("does not target"));
        let missing = &demo_tensors()[..6];
        assert!(
            check(&file(&as_refs(missing)), &cfg)
                .unwrap_err()
                .message
                .contains("holds 6 of the 8")
        );
        let mut extra_layer = demo_tensors();
        extra_layer[0].0 = extra_layer[0].0.replace("layers.0", "layers.7");
        assert!(
            check(&file(&as_refs(&extra_layer)), &cfg)
                .unwrap_err()
                .message
                .contains("layer 7")
        );
    }

    #[test]
    fn the_config_must_match_the_job() {
        let expected = Expected {
            base_model: "tiny-random-llama",
            rank: 4,
            alpha: 8,
            shape: Some(DEMO),
        };
        assert_eq!(check_config(&config(&["q_proj"]), &expected), Ok(()));
        let mut c = config(&["q_proj"]);
        c.r = 8;
        assert!(
            check_config(&c, &expected)
                .unwrap_err()
                .message
                .contains("rank r = 8")
        );
        let mut c = config(&["q_proj"]);
        c.base_model_name_or_path = Some("meta-llama/Llama-3.1-8B".into());
        assert_eq!(
            check_config(&c, &expected).unwrap_err().code,
            "artifact_mismatch"
        );
        assert!(check_config(&config(&[]), &expected).is_err());
        let parsed = parse_config(
            br#"{"base_model_name_or_path": "tiny-random-llama", "peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["v_proj", "q_proj"]}"#,
        )
        .unwrap();
        assert_eq!(check_config(&parsed, &expected), Ok(()));
        assert_eq!(parse_config(b"{").unwrap_err().code, "artifact_corrupt");
    }
}
