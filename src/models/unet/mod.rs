//! SD1.x UNet2DConditionModel. (being written)
