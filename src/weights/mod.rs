//! Safetensors files, checkpoint key names and model-family detection. (being written)
