//! One record of any supported format → a chat example (roles and contents), or a problem.
//!
//! Records are deserialised into borrowed structs (strings without escapes are not copied),
//! which is what makes the validator several times faster than `json.loads` per line.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::Problem;
use crate::datasets::DatasetFormat;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::User => "user",
            Self::Assistant => "assistant",
        }
    }
}

/// A normalised training example.
#[derive(Debug, Default)]
pub struct Example<'a> {
    pub messages: Vec<(Role, Cow<'a, str>)>,
    /// Groups brightrun pairs into conversations.
    pub conversation: Option<Cow<'a, str>>,
}

/// What one record turned out to be.
pub enum Record<'a> {
    Example(Example<'a>),
    /// A brightrun pair whose `target_response` is null: not a training example, not an error.
    Skipped,
    /// The brightrun JSONL `_meta` line.
    Meta,
}

/// Message content: a string, null, or OpenAI's list of content parts (`[{type, text}]`).
#[derive(Debug, Default)]
pub enum Content<'a> {
    #[default]
    Missing,
    Null,
    Text(Cow<'a, str>),
    /// Text parts joined; `false` when a part was not text (e.g. an image).
    Parts(String, bool),
    Other(&'static str),
}

impl<'de: 'a, 'a> Deserialize<'de> for Content<'a> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Content<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, null or a list of content parts")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Content::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Content::Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Content::Text(Cow::Owned(v)))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Content::Null)
            }
            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(Content::Null)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Content::Other("a boolean"))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Content::Other("a number"))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Content::Other("a number"))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Content::Other("a number"))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Content::Other("an object"))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut text = String::new();
                let mut all_text = true;
                while let Some(part) = seq.next_element::<Part>()? {
                    match (part.kind.as_deref(), part.text) {
                        (Some("text") | None, Some(t)) => {
                            if !text.is_empty() {
                                text.push('\n');
                            }
                            text.push_str(&t);
                        }
                        _ => all_text = false,
                    }
                }
                Ok(Content::Parts(text, all_text))
            }
        }
        deserializer.deserialize_any(V)
    }
}

#[derive(Deserialize)]
struct Part<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
}

/// A value that may be any JSON type; we look only at strings.
#[derive(Debug, Default)]
pub enum Text<'a> {
    #[default]
    Missing,
    Null,
    Str(Cow<'a, str>),
    Other(&'static str),
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(match Content::deserialize(deserializer)? {
            Content::Missing => Text::Missing,
            Content::Null => Text::Null,
            Content::Text(t) => Text::Str(t),
            Content::Parts(..) => Text::Other("a list"),
            Content::Other(kind) => Text::Other(kind),
        })
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ChatMessage<'a> {
    #[serde(borrow)]
    role: Text<'a>,
    #[serde(borrow)]
    content: Content<'a>,
    #[serde(borrow)]
    from: Text<'a>,
    #[serde(borrow)]
    value: Text<'a>,
}

/// Any record of any supported format: the fields present decide which it is.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct RawRecord<'a> {
    // OpenAI chat
    #[serde(borrow, deserialize_with = "present")]
    messages: Option<MaybeList<ChatMessage<'a>>>,
    // ShareGPT
    #[serde(borrow, deserialize_with = "present")]
    conversations: Option<MaybeList<ChatMessage<'a>>>,
    // Alpaca
    #[serde(borrow)]
    instruction: Text<'a>,
    #[serde(borrow)]
    input: Text<'a>,
    #[serde(borrow)]
    output: Text<'a>,
    #[serde(borrow)]
    system: Text<'a>,
    // brightrun-lora-v4 pair
    #[serde(borrow)]
    system_prompt: Text<'a>,
    #[serde(borrow, deserialize_with = "present")]
    conversation_history: Option<MaybeList<ChatMessage<'a>>>,
    #[serde(borrow)]
    current_user_input: Text<'a>,
    #[serde(borrow)]
    target_response: Text<'a>,
    #[serde(borrow)]
    conversation_id: Text<'a>,
    #[serde(rename = "_meta")]
    meta: Option<IgnoredAny>,
}

/// A field that is there, even as `null` (serde's `Option` would turn null into "missing").
fn present<'de, D, T>(deserializer: D) -> Result<Option<MaybeList<T>>, D::Error>
where
    D: de::Deserializer<'de>,
    T: Deserialize<'de>,
{
    MaybeList::deserialize(deserializer).map(Some)
}

/// A list, or whatever else was there (so a wrong type is our message, not serde's).
pub enum MaybeList<T> {
    List(Vec<T>),
    Other(&'static str),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for MaybeList<T> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = MaybeList<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(4).min(64));
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(MaybeList::List(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(MaybeList::Other("an object"))
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(MaybeList::Other("a string"))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(MaybeList::Other("null"))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(MaybeList::Other("a boolean"))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(MaybeList::Other("a number"))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(MaybeList::Other("a number"))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(MaybeList::Other("a number"))
            }
        }
        deserializer.deserialize_any(V(std::marker::PhantomData))
    }
}

/// Which format a record looks like, from the fields it has.
pub fn detect(record: &RawRecord<'_>) -> Option<DatasetFormat> {
    if record.meta.is_some() {
        return Some(DatasetFormat::BrightrunV4Jsonl);
    }
    if record.messages.is_some() {
        return Some(DatasetFormat::OpenaiChat);
    }
    if record.conversations.is_some() {
        return Some(DatasetFormat::Sharegpt);
    }
    if !matches!(record.current_user_input, Text::Missing)
        || !matches!(record.target_response, Text::Missing)
    {
        return Some(DatasetFormat::BrightrunV4Jsonl);
    }
    if !matches!(record.instruction, Text::Missing) || !matches!(record.output, Text::Missing) {
        return Some(DatasetFormat::Alpaca);
    }
    None
}

fn problem(code: &'static str, message: String, suggestion: &str) -> Problem {
    use crate::format::{MAX_MESSAGE_CHARS, clip};
    Problem {
        code,
        message: clip(&message, MAX_MESSAGE_CHARS).into_owned(),
        suggestion: clip(suggestion, MAX_MESSAGE_CHARS).into_owned(),
    }
}

/// Interprets `record` as `format`. Brightrun pairs from the full JSON use the JSONL rules.
pub fn convert<'a>(record: RawRecord<'a>, format: DatasetFormat) -> Result<Record<'a>, Problem> {
    match format {
        DatasetFormat::OpenaiChat => openai(record),
        DatasetFormat::Sharegpt => sharegpt(record),
        DatasetFormat::Alpaca => alpaca(record),
        DatasetFormat::BrightrunV4Jsonl | DatasetFormat::BrightrunV4Json => {
            if record.meta.is_some() {
                return Ok(Record::Meta);
            }
            brightrun_pair(record)
        }
    }
}

fn list_of<'a>(
    list: Option<MaybeList<ChatMessage<'a>>>,
    field: &str,
    code: &'static str,
) -> Result<Vec<ChatMessage<'a>>, Problem> {
    match list {
        None => Err(problem(
            code,
            format!("\"{field}\" is missing"),
            &format!("Add a \"{field}\" list of messages to every record."),
        )),
        Some(MaybeList::Other(kind)) => Err(problem(
            code,
            format!("\"{field}\" must be a list of messages, found {kind}"),
            &format!("Make \"{field}\" a JSON array: [{{…}}, {{…}}]."),
        )),
        Some(MaybeList::List(items)) if items.is_empty() => Err(problem(
            code,
            format!("\"{field}\" is empty"),
            "Each example needs at least a user message and an assistant reply.",
        )),
        Some(MaybeList::List(items)) => Ok(items),
    }
}

fn content_text<'a>(content: Content<'a>, at: usize) -> Result<Cow<'a, str>, Problem> {
    match content {
        Content::Text(t) => Ok(t),
        Content::Parts(text, true) => Ok(Cow::Owned(text)),
        Content::Parts(_, false) => Err(problem(
            "unsupported_content",
            format!("message {} has non-text content parts", at + 1),
            "LoRA text training uses text only: remove image or audio parts.",
        )),
        Content::Missing | Content::Null => Err(problem(
            "missing_content",
            format!("message {} has no \"content\"", at + 1),
            "Give every message a \"content\" string.",
        )),
        Content::Other(kind) => Err(problem(
            "invalid_field_type",
            format!(
                "message {}: \"content\" must be a string, found {kind}",
                at + 1
            ),
            "Write the content as a JSON string.",
        )),
    }
}

fn role_of(
    text: &Text<'_>,
    field: &str,
    at: usize,
    assistant_names: &[&str],
) -> Result<Role, Problem> {
    match text {
        Text::Str(role) => {
            let lower = role.to_ascii_lowercase();
            match lower.as_str() {
                "system" => Ok(Role::System),
                "user" | "human" => Ok(Role::User),
                r if r == "assistant" || assistant_names.contains(&r) => Ok(Role::Assistant),
                _ => Err(problem(
                    "unknown_role",
                    format!(
                        "message {} has {field} \"{}\"",
                        at + 1,
                        crate::format::clip(role, 40)
                    ),
                    if field == "from" {
                        "Use \"system\", \"human\" or \"gpt\"."
                    } else {
                        "Use \"system\", \"user\" or \"assistant\"."
                    },
                )),
            }
        }
        Text::Missing | Text::Null => Err(problem(
            "missing_role",
            format!("message {} has no \"{field}\"", at + 1),
            "Give every message a role (system, user or assistant).",
        )),
        Text::Other(kind) => Err(problem(
            "invalid_field_type",
            format!(
                "message {}: \"{field}\" must be a string, found {kind}",
                at + 1
            ),
            "Write the role as a JSON string.",
        )),
    }
}

fn require_assistant(example: &Example<'_>) -> Result<(), Problem> {
    let assistant = example
        .messages
        .iter()
        .filter(|(r, _)| *r == Role::Assistant);
    let mut any = false;
    for (_, content) in assistant {
        any = true;
        if content.trim().is_empty() {
            return Err(problem(
                "empty_content",
                "an assistant message is empty".into(),
                "Every assistant reply must contain the text the model should learn to write.",
            ));
        }
    }
    if any {
        Ok(())
    } else {
        Err(problem(
            "missing_assistant",
            "the example has no assistant message".into(),
            "Add the reply the model should learn as a message with role \"assistant\".",
        ))
    }
}

fn openai(record: RawRecord<'_>) -> Result<Record<'_>, Problem> {
    let messages = list_of(record.messages, "messages", "missing_messages")?;
    let mut example = Example::default();
    for (at, message) in messages.into_iter().enumerate() {
        let role = role_of(&message.role, "role", at, &[])?;
        let content = content_text(message.content, at)?;
        example.messages.push((role, content));
    }
    require_assistant(&example)?;
    Ok(Record::Example(example))
}

fn sharegpt(record: RawRecord<'_>) -> Result<Record<'_>, Problem> {
    let turns = list_of(record.conversations, "conversations", "missing_messages")?;
    let mut example = Example::default();
    for (at, turn) in turns.into_iter().enumerate() {
        let role = role_of(&turn.from, "from", at, &["gpt", "bot", "model", "chatgpt"])?;
        let content = match turn.value {
            Text::Str(v) => v,
            Text::Missing | Text::Null => {
                return Err(problem(
                    "missing_content",
                    format!("turn {} has no \"value\"", at + 1),
                    "Give every turn a \"value\" string.",
                ));
            }
            Text::Other(kind) => {
                return Err(problem(
                    "invalid_field_type",
                    format!("turn {}: \"value\" must be a string, found {kind}", at + 1),
                    "Write the value as a JSON string.",
                ));
            }
        };
        example.messages.push((role, content));
    }
    require_assistant(&example)?;
    Ok(Record::Example(example))
}

fn string_field<'a>(
    text: Text<'a>,
    field: &str,
    required: bool,
) -> Result<Option<Cow<'a, str>>, Problem> {
    match text {
        Text::Str(s) => Ok(Some(s)),
        Text::Missing | Text::Null if !required => Ok(None),
        Text::Missing | Text::Null => Err(problem(
            "missing_field",
            format!("\"{field}\" is missing"),
            &format!("Every record needs a \"{field}\" string."),
        )),
        Text::Other(kind) => Err(problem(
            "invalid_field_type",
            format!("\"{field}\" must be a string, found {kind}"),
            &format!("Write \"{field}\" as a JSON string."),
        )),
    }
}

fn alpaca(record: RawRecord<'_>) -> Result<Record<'_>, Problem> {
    let instruction = string_field(record.instruction, "instruction", true)?.unwrap_or_default();
    let input = string_field(record.input, "input", false)?;
    let output = string_field(record.output, "output", true)?.unwrap_or_default();
    let system = string_field(record.system, "system", false)?;
    if instruction.trim().is_empty() {
        return Err(problem(
            "empty_content",
            "\"instruction\" is empty".into(),
            "Write the task in \"instruction\".",
        ));
    }
    let user = match input.filter(|i| !i.trim().is_empty()) {
        Some(input) => Cow::Owned(format!("{instruction}\n\n{input}")),
        None => instruction,
    };
    let mut example = Example::default();
    if let Some(system) = system.filter(|s| !s.trim().is_empty()) {
        example.messages.push((Role::System, system));
    }
    example.messages.push((Role::User, user));
    example.messages.push((Role::Assistant, output));
    require_assistant(&example)?;
    Ok(Record::Example(example))
}

fn brightrun_pair(record: RawRecord<'_>) -> Result<Record<'_>, Problem> {
    let target = match record.target_response {
        Text::Null => return Ok(Record::Skipped),
        other => string_field(other, "target_response", true)?.unwrap_or_default(),
    };
    let mut example = Example {
        conversation: string_field(record.conversation_id, "conversation_id", false)?,
        ..Example::default()
    };
    if let Some(system) = string_field(record.system_prompt, "system_prompt", false)?
        && !system.trim().is_empty()
    {
        example.messages.push((Role::System, system));
    }
    match record.conversation_history {
        None => {}
        Some(MaybeList::Other(kind)) => {
            return Err(problem(
                "invalid_field_type",
                format!("\"conversation_history\" must be a list, found {kind}"),
                "Make \"conversation_history\" a JSON array of {role, content} messages.",
            ));
        }
        Some(MaybeList::List(history)) => {
            for (at, message) in history.into_iter().enumerate() {
                let role = role_of(&message.role, "role", at, &[])?;
                example
                    .messages
                    .push((role, content_text(message.content, at)?));
            }
        }
    }
    let user =
        string_field(record.current_user_input, "current_user_input", true)?.unwrap_or_default();
    example.messages.push((Role::User, user));
    example.messages.push((Role::Assistant, target));
    require_assistant(&example)?;
    Ok(Record::Example(example))
}
