//! SD1.x AutoencoderKL: decoder and encoder. (being written)
