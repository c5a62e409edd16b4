//! LoRA / LyCORIS adapter files: parsing, key mapping to model weights, and exact ΔW. (being written)
