"""lora-pipeline GPU worker: trains a LoRA/QLoRA adapter for one job and streams typed events.

The one contract with the platform is documented in ../README.md and ../contract/*.schema.json.
"""

CONTRACT_VERSION = 1
