//! `lora merge`: several LoRAs at their weights into one file (skeleton; being written).
