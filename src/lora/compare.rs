//! `lora compare`: how similar LoRAs' ΔW are, module by module (skeleton; being written).
