"""Base model + tokenizer loading (demo, Hugging Face id or local path) and LoRA/QLoRA wrapping."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from . import demo_model, hub
from .contract import DEMO_MODEL
from .errors import WorkerError, is_oom

log = logging.getLogger(__name__)

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

# For tokenizers without a chat template (base models): plain role headers, and every turn ends with the
# model's own EOS token, so the adapter learns to stop where the model's generation stops. A borrowed
# template's end-of-turn marker (llama-3's <|eot_id|>) is not a token of another model's vocabulary: it
# would be learned as a few ordinary pieces and generation would run on past the reply.
BASE_CHAT_TEMPLATE = (
    "{% if bos_token %}{{ bos_token }}{% endif %}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + (message['content'] | trim) + eos_token + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

# Bytes of activations kept for backward per token and decoder layer, in bf16, without gradient
# checkpointing: the layer input, norms, q/k/v/o and residual (~8 × hidden) and the MLP's gate, up,
# activation and product (~4 × intermediate). With checkpointing only the layer input (hidden) stays,
# and one layer's full set is rebuilt at a time. The platform's estimate (src/training) uses the same.
def activation_bytes(hidden: int, intermediate: int, layers: int, tokens: int, checkpointing: bool) -> int:
    full_layer = 2 * (8 * hidden + 4 * intermediate) * tokens
    if checkpointing:
        return 2 * hidden * tokens * layers + full_layer
    return full_layer * layers


# Checkpointing costs about a third more compute: used only where the activations would not fit.
ACTIVATION_SHARE = 0.7


def needs_gradient_checkpointing(config, tokens: int, free_bytes: int) -> bool:
    """Whether a micro-batch of `tokens` tokens needs gradient checkpointing to fit in `free_bytes`."""
    hidden = getattr(config, "hidden_size", 0)
    intermediate = getattr(config, "intermediate_size", 4 * hidden) or 4 * hidden
    layers = getattr(config, "num_hidden_layers", 0)
    return activation_bytes(hidden, intermediate, layers, tokens, False) > ACTIVATION_SHARE * free_bytes


@dataclass
class Loaded:
    model: object  # peft.PeftModel
    tokenizer: object
    device: str  # "cuda" | "cpu"
    quantization_used: str  # "nf4" | "none"


# The operator's explicit consent to train real models on a CPU (a self-hosted box billed at 0);
# never set on RunPod, where a CPU run would bill GPU prices until the execution timeout.
ALLOW_CPU_ENV = "LORA_WORKER_ALLOW_CPU"


def plan(quantization: str, base_model: str) -> tuple[str, str, str]:
    """(device, quantization_used, note for the stage message) decided before anything is downloaded.

    Without CUDA only the demo model trains (it is built for CPU); any other model fails at once with
    `no_gpu` rather than train for hours at GPU prices on a worker whose GPU is missing or unusable.
    """
    import torch

    if torch.cuda.is_available():
        return "cuda", quantization, ("QLoRA (4-bit nf4)" if quantization == "nf4" else "LoRA") + " on CUDA"
    if base_model != DEMO_MODEL and os.environ.get(ALLOW_CPU_ENV) != "1":
        raise WorkerError("no_gpu", f"no CUDA GPU is available to this worker (torch {torch.__version__}, "
                          f"CUDA build {torch.version.cuda or 'none'}); {base_model} is not trained on a CPU")
    if quantization == "nf4":
        return "cpu", "none", "QLoRA needs CUDA; no GPU found, so plain LoRA in float32 on CPU is used"
    return "cpu", "none", "LoRA in float32 on CPU"


def _source(base_model: str) -> tuple[str, bool]:
    """(what to pass to from_pretrained, local_files_only)."""
    if base_model == DEMO_MODEL:
        return str(demo_model.ensure_demo_model()), True
    if os.path.isabs(base_model) or base_model.startswith((".", "~")) or os.path.isdir(base_model):
        path = Path(base_model).expanduser()
        if not path.is_dir():
            raise WorkerError("model_load_failed", f"local model directory {base_model} does not exist")
        return str(path), True
    return base_model, False


def load_tokenizer(base_model: str):
    """The tokenizer alone (seconds, no GPU memory): the dataset is tokenised before the model loads."""
    from transformers import AutoTokenizer

    src, local_only = _source(base_model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(src, local_files_only=local_only)
    except Exception as e:  # noqa: BLE001 - any load failure is reported, not crashed on
        raise WorkerError("model_load_failed", f"could not load the tokenizer of {base_model!r}: "
                          f"{type(e).__name__}: {e}", hub.load_failure_hint(e)) from e
    # Base models often ship without a pad token or chat template; the worker needs both.
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not getattr(tokenizer, "chat_template", None):
        log.warning("tokenizer has no chat template; using the default that ends each turn with its EOS")
        tokenizer.chat_template = BASE_CHAT_TEMPLATE
    if tokenizer.pad_token_id is None:
        raise WorkerError("model_load_failed", "the tokenizer has neither a pad nor an eos token")
    return tokenizer


def lora_targets(model) -> list[str] | str:
    """The usual attention and MLP projections where the model names them so; otherwise every linear
    layer but the output head ("all-linear": Phi-3's fused qkv_proj, GPT-NeoX's query_key_value, ...)."""
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    targets = [t for t in LORA_TARGETS if t in present]
    return targets or "all-linear"


def enable_gradient_checkpointing(model) -> None:
    """Non-reentrant checkpointing: works with frozen inputs and LoRA, and recomputes each layer once."""
    log.info("gradient checkpointing on: the activations of a micro-batch would not fit in GPU memory")
    # transformers 5 renamed it (the old name still works there but warns).
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()


def load(base_model: str, hp, device: str, quantization_used: str, tokenizer) -> Loaded:
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForCausalLM

    src, local_only = _source(base_model)
    try:
        kwargs: dict = {"local_files_only": local_only}
        if device == "cuda":
            if quantization_used == "nf4":
                from transformers import BitsAndBytesConfig

                kwargs["quantization_config"] = BitsAndBytesConfig(
                    load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                    bnb_4bit_compute_dtype=torch.bfloat16,
                )
                kwargs["dtype"] = torch.bfloat16
            else:
                # bf16 base weights; peft keeps the adapter weights in float32 (autocast_adapter_dtype).
                kwargs["dtype"] = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
            kwargs["device_map"] = {"": 0}
        else:
            kwargs["dtype"] = torch.float32
        model = AutoModelForCausalLM.from_pretrained(src, **kwargs)
    except WorkerError:
        raise
    except Exception as e:  # noqa: BLE001 - any load failure is reported, not crashed on
        if is_oom(e):
            raise WorkerError("out_of_memory", f"the base model does not fit in GPU memory: {e}",
                              "pick a GPU with more memory, or use quantization nf4") from e
        raise WorkerError("model_load_failed", f"could not load base model {base_model!r}: "
                          f"{type(e).__name__}: {e}", hub.load_failure_hint(e)) from e

    model.config.use_cache = False  # KV cache is useless in training and conflicts with checkpointing
    # Only the adapter trains. Unlike peft's prepare_model_for_kbit_training, the embeddings, norms and
    # output head stay in bf16: upcasting them to fp32 runs the whole residual stream in fp32 (twice the
    # activation memory, slower matmuls) with no benefit once the compute dtype is bf16.
    for p in model.parameters():
        p.requires_grad_(False)
    if device == "cuda":
        free, _ = torch.cuda.mem_get_info()
        if needs_gradient_checkpointing(model.config, hp.batch_size * hp.max_seq_len, free):
            enable_gradient_checkpointing(model)

    targets = lora_targets(model)
    if base_model == DEMO_MODEL and isinstance(targets, list):
        # The demo model's output head is random: an adapter on it too is what lets a CPU demo visibly
        # learn a dataset's style in seconds. A real model's head is trained already; it is left alone.
        targets = targets + ["lm_head"]
    lora = LoraConfig(r=hp.rank, lora_alpha=hp.alpha, lora_dropout=hp.dropout, target_modules=targets,
                      task_type=TaskType.CAUSAL_LM, bias="none")
    # LoRA's A matrices are drawn at random here: seeded now, so the same seed gives the same
    # adapter init (and, with the seeded data order, the same run).
    torch.manual_seed(hp.seed)
    model = get_peft_model(model, lora)  # device_map already placed the base on the GPU; adapters follow it
    return Loaded(model, tokenizer, device, quantization_used)
