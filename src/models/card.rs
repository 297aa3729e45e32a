//! The model card: a `README.md` stored with the adapter files, in the Hugging Face model-card
//! style (YAML front matter, then Markdown), so the folder a user downloads explains itself.

use super::{Quality, TrainingSummary};
use crate::format::{bytes, duration, money, thousands};

/// What the card describes.
pub struct CardInput<'a> {
    pub name: &'a str,
    /// The base model as loaded (a Hugging Face id, or the demo model's name).
    pub base_model: &'a str,
    pub demo: bool,
    pub summary: &'a TrainingSummary,
    pub hyperparameters: &'a serde_json::Value,
    pub quality: Option<&'a Quality>,
    pub adapter_bytes: u64,
}

/// YAML string: quoted, with quotes and backslashes escaped.
fn yaml(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

pub fn render(c: &CardInput<'_>) -> String {
    let s = c.summary;
    let mut out = String::new();
    out.push_str("---\n");
    out.push_str(&format!("base_model: {}\n", yaml(c.base_model)));
    out.push_str("library_name: peft\n");
    out.push_str("pipeline_tag: text-generation\n");
    out.push_str("tags:\n  - lora\n  - peft\n  - lora-pipeline\n");
    if let Some(q) = c.quality {
        out.push_str("model-index:\n");
        out.push_str(&format!("  - name: {}\n", yaml(c.name)));
        out.push_str(
            "    results:\n      - task:\n          type: text-generation\n        metrics:\n",
        );
        out.push_str(&format!(
            "          - type: loss\n            name: final train loss\n            value: {:.4}\n",
            q.final_train_loss
        ));
        if let Some(e) = q.final_eval_loss {
            out.push_str(&format!(
                "          - type: loss\n            name: final eval loss\n            value: {e:.4}\n"
            ));
        }
        if let Some(p) = q.perplexity {
            out.push_str(&format!(
                "          - type: perplexity\n            name: eval perplexity\n            value: {p:.3}\n"
            ));
        }
    }
    out.push_str("---\n\n");

    out.push_str(&format!("# {}\n\n", c.name));
    out.push_str(&format!(
        "A LoRA adapter for `{}`, trained with lora-pipeline on the dataset \"{}\".\n",
        c.base_model, s.dataset_name
    ));
    if c.demo {
        out.push_str(
            "\nThe base model is lora-pipeline's demo model (random weights, built locally): this adapter shows the \
             product's flow, not a useful model.\n",
        );
    }
    if let Some(q) = c.quality {
        out.push_str(&format!(
            "\n**Rating: {} / 5.** {}.\n",
            q.overall_score, q.explanation
        ));
    }

    out.push_str("\n## Dataset\n\n| | |\n|---|---|\n");
    out.push_str(&format!("| name | {} |\n", s.dataset_name));
    if let Some(sha) = &s.dataset_sha256 {
        out.push_str(&format!("| sha256 | `{sha}` |\n"));
    }
    if let Some(n) = s.dataset_examples {
        out.push_str(&format!("| examples | {} |\n", thousands(i64::from(n))));
    }
    if let Some(t) = s.dataset_tokens {
        out.push_str(&format!("| tokens | {} |\n", thousands(t)));
    }

    out.push_str("\n## Training\n\n| hyperparameter | value |\n|---|---|\n");
    if let Some(map) = c.hyperparameters.as_object() {
        for (k, v) in map {
            out.push_str(&format!("| {k} | {} |\n", v.to_string().trim_matches('"')));
        }
    }
    out.push_str("\n| run | |\n|---|---|\n");
    out.push_str(&format!(
        "| GPU | {} × {} ({}, {}) |\n",
        s.gpu_count, s.gpu_type, s.device, s.quantization_used
    ));
    out.push_str(&format!(
        "| steps | {} |\n",
        thousands(i64::from(s.total_steps))
    ));
    out.push_str(&format!(
        "| training time | {} |\n",
        duration(s.train_runtime_s.round() as u64)
    ));
    if let Some(d) = s.duration_s {
        out.push_str(&format!("| whole run | {} |\n", duration(d.round() as u64)));
    }
    out.push_str(&format!(
        "| throughput | {} tokens/s |\n",
        thousands(s.tokens_per_sec.round() as i64)
    ));
    out.push_str(&format!(
        "| tokens trained | {} |\n",
        thousands(s.train_tokens as i64)
    ));
    out.push_str(&format!("| cost | {} |\n", money(s.cost)));
    if let Some(e) = s.estimated_cost {
        out.push_str(&format!("| estimated cost | {} |\n", money(e)));
    }
    out.push_str(&format!("| adapter size | {} |\n", bytes(c.adapter_bytes)));

    if let Some(q) = c.quality {
        out.push_str("\n## Results\n\n| metric | value |\n|---|---|\n");
        out.push_str(&format!(
            "| train loss | {:.4} → {:.4} ({:.0}% lower) |\n",
            q.initial_train_loss,
            q.final_train_loss,
            q.loss_reduction * 100.0
        ));
        if let Some(e) = q.final_eval_loss {
            out.push_str(&format!("| eval loss | {e:.4} |\n"));
        }
        if let Some(p) = q.perplexity {
            out.push_str(&format!("| eval perplexity | {p:.3} |\n"));
        }
        out.push_str(&format!("| rating | {} / 5 |\n", q.overall_score));
    }

    let load_base = if c.demo {
        "# the demo model is built by the lora-pipeline worker: lora_worker.demo_model.ensure_demo_model()\n\
         base = AutoModelForCausalLM.from_pretrained(\"path/to/tiny-random-llama\")"
            .to_owned()
    } else {
        format!(
            "base = AutoModelForCausalLM.from_pretrained(\"{}\", device_map=\"auto\")",
            c.base_model
        )
    };
    out.push_str(&format!(
        "\n## Use\n\nUnpack the download into a folder, then:\n\n```python\nfrom peft import PeftModel\n\
         from transformers import AutoModelForCausalLM, AutoTokenizer\n\n{load_base}\n\
         model = PeftModel.from_pretrained(base, \"path/to/this/folder\")\n\
         tokenizer = AutoTokenizer.from_pretrained(\"path/to/this/folder\")\n```\n"
    ));
    out
}

/// The card as HTML for the model page: the YAML front matter as a code block, the Markdown
/// rendered, and nothing a user's text (a dataset's name) could smuggle in — raw HTML is shown
/// as text, and links and images are reduced to their text.
#[cfg(feature = "ssr")]
pub fn to_html(card: &str) -> String {
    use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd, html};
    let (front, body) = match card
        .strip_prefix("---\n")
        .and_then(|rest| rest.split_once("\n---\n"))
    {
        Some((front, body)) => (Some(front), body),
        None => (None, card),
    };
    let mut out = String::new();
    if let Some(front) = front {
        let escaped = front
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        out.push_str(&format!(
            "<pre class=\"front-matter\"><code>{escaped}</code></pre>\n"
        ));
    }
    let events = Parser::new_ext(body, Options::ENABLE_TABLES).filter_map(|event| match event {
        Event::Html(text) | Event::InlineHtml(text) => Some(Event::Text(text)),
        Event::Start(Tag::Link { .. } | Tag::Image { .. })
        | Event::End(TagEnd::Link | TagEnd::Image) => None,
        event => Some(event),
    });
    html::push_html(&mut out, events);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_card_has_front_matter_metrics_and_loading_code() {
        let summary = TrainingSummary {
            total_steps: 120,
            train_runtime_s: 95.0,
            tokens_per_sec: 4100.0,
            train_tokens: 389_000,
            device: "cuda".into(),
            quantization_used: "nf4".into(),
            gpu_type: "L4".into(),
            gpu_count: 1,
            duration_s: Some(160.0),
            cost: 0.0304,
            estimated_cost: Some(0.04),
            dataset_name: "support \"v2\"".into(),
            dataset_sha256: Some("ab".repeat(32)),
            dataset_examples: Some(1200),
            dataset_tokens: Some(480_000),
        };
        let quality = crate::models::quality::rate(
            &(1..=20)
                .map(|s| crate::jobs::MetricPoint {
                    train_loss: Some(3.0 - 0.1 * f64::from(s)),
                    ..crate::jobs::MetricPoint::at(s)
                })
                .collect::<Vec<_>>(),
            Some(1.2),
        );
        let hp = serde_json::json!({"learning_rate": 0.0002, "rank": 16, "quantization": "nf4"});
        let card = render(&CardInput {
            name: "support-coach",
            base_model: "meta-llama/Llama-3.1-8B-Instruct",
            demo: false,
            summary: &summary,
            hyperparameters: &hp,
            quality: quality.as_ref(),
            adapter_bytes: 42_000_000,
        });
        assert!(card.starts_with(
            "---\nbase_model: \"meta-llama/Llama-3.1-8B-Instruct\"\nlibrary_name: peft\n"
        ));
        assert!(card.contains("value: 1.2000"), "{card}");
        assert!(card.contains("# support-coach"));
        assert!(card.contains("dataset \"support \"v2\"\""));
        assert!(card.contains("| rank | 16 |") && card.contains("| quantization | nf4 |"));
        assert!(card.contains("| GPU | 1 × L4 (cuda, nf4) |"));
        assert!(
            card.contains("| cost | $0.0304 |") || card.contains("| cost | $0.03 |"),
            "{card}"
        );
        assert!(card.contains("PeftModel.from_pretrained(base, \"path/to/this/folder\")"));
        assert!(card.contains("**Rating: "));

        let html = to_html(&card);
        assert!(
            html.starts_with("<pre class=\"front-matter\"><code>base_model: "),
            "{html}"
        );
        assert!(
            html.contains("<h1>support-coach</h1>") && html.contains("<table>"),
            "{html}"
        );
    }

    #[test]
    fn user_text_cannot_become_markup() {
        let html = to_html(
            "# x\n\nA <script>alert(1)</script> and [a link](javascript:alert(1)) ![i](x.png)\n",
        );
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("href") && !html.contains("<img"), "{html}");
        assert!(
            html.contains("&lt;script&gt;") && html.contains("a link"),
            "{html}"
        );
    }
}
