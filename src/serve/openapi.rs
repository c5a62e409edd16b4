//! `GET /openapi.json`: an OpenAPI 3 description of the routes, written by hand (the request
//! schema lists the fields lorafuse acts on, with A1111's defaults).

use serde_json::{json, Value};

fn error_responses() -> Value {
    let e = json!({"description": "A1111-style error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/HTTPError"}}}});
    json!({"400": e, "401": e, "403": e, "413": e, "422": e, "429": e, "503": e, "504": e})
}

fn ok(description: &str, schema: Value) -> Value {
    json!({"200": {"description": description, "content": {"application/json": {"schema": schema}}}})
}

fn merge(mut a: Value, b: Value) -> Value {
    if let (Some(a), Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
}

pub fn document() -> Value {
    let any = json!({"type": "object"});
    let list = json!({"type": "array", "items": {"type": "object"}});
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "lorafuse serve",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "A subset of AUTOMATIC1111's web API (field names and defaults as A1111), with per-tier LoRA quotas and a fair, bounded queue. Authenticate with `Authorization: Bearer <API key>`; without it requests use the anonymous tier."
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "HTTPError": {"type": "object", "properties": {
                    "error": {"type": "string"}, "detail": {"type": "string"}, "body": {"type": "string"},
                    "errors": {"type": "string"}, "limit": {"type": "string", "description": "the policy limit that refused the request"}}},
                "StableDiffusionTxt2ImgProcessingAPI": {"type": "object", "properties": {
                    "prompt": {"type": "string", "default": "", "description": "may hold <lora:NAME:WEIGHT> tags"},
                    "negative_prompt": {"type": "string", "default": ""},
                    "seed": {"type": "integer", "default": -1},
                    "subseed": {"type": "integer", "default": -1, "description": "ignored (logged)"},
                    "subseed_strength": {"type": "number", "default": 0},
                    "sampler_name": {"type": "string", "description": "Euler, Euler a, DPM++ 2M, DPM++ 2M Karras, DDIM, LCM"},
                    "sampler_index": {"type": "string", "default": "Euler"},
                    "scheduler": {"type": "string", "description": "Automatic, Uniform or Karras"},
                    "batch_size": {"type": "integer", "default": 1},
                    "n_iter": {"type": "integer", "default": 1},
                    "steps": {"type": "integer", "default": 50},
                    "cfg_scale": {"type": "number", "default": 7.0},
                    "width": {"type": "integer", "default": 512},
                    "height": {"type": "integer", "default": 512},
                    "override_settings": {"type": "object", "description": "CLIP_stop_at_last_layers is honoured"},
                    "enable_hr": {"type": "boolean", "default": false, "description": "hires fix: a second, img2img pass at the hires size"},
                    "denoising_strength": {"type": "number", "description": "hires fix's second-pass strength (default 0.7)"},
                    "hr_scale": {"type": "number", "default": 2.0},
                    "hr_upscaler": {"type": "string", "description": "Latent, Latent (nearest) or Lanczos"},
                    "hr_second_pass_steps": {"type": "integer", "default": 0, "description": "0 = steps"},
                    "hr_resize_x": {"type": "integer", "default": 0},
                    "hr_resize_y": {"type": "integer", "default": 0},
                    "send_images": {"type": "boolean", "default": true},
                    "save_images": {"type": "boolean", "default": false}}},
                "StableDiffusionImg2ImgProcessingAPI": {"allOf": [{"$ref": "#/components/schemas/StableDiffusionTxt2ImgProcessingAPI"}, {"type": "object", "properties": {
                    "init_images": {"type": "array", "items": {"type": "string"}, "description": "base64 images (PNG, JPEG, WebP): one, or one per image"},
                    "denoising_strength": {"type": "number", "default": 0.75},
                    "resize_mode": {"type": "integer", "default": 0, "description": "0 just resize, 1 crop and resize, 2 resize and fill"},
                    "mask": {"type": "string", "description": "base64 mask, white = repaint"},
                    "mask_blur": {"type": "number", "default": 4},
                    "inpainting_fill": {"type": "integer", "default": 0, "description": "treated as 1 (original)"},
                    "inpaint_full_res": {"type": "boolean", "default": true, "description": "inpaint only the masked area (plus padding) at full resolution"},
                    "inpaint_full_res_padding": {"type": "integer", "default": 0},
                    "inpainting_mask_invert": {"type": "integer", "default": 0}}}]},
                "TextToImageResponse": {"type": "object", "properties": {
                    "images": {"type": "array", "items": {"type": "string", "description": "base64 PNG with the infotext in its parameters chunk"}},
                    "parameters": {"type": "object"},
                    "info": {"type": "string", "description": "JSON: prompt, all_prompts, seed, all_seeds, infotexts, width, height, sampler_name, cfg_scale, steps, batch_size, clip_skip, …"}}}
            }
        },
        "security": [{}, {"bearer": []}],
        "paths": {
            "/sdapi/v1/txt2img": {"post": {
                "summary": "Text to image",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/StableDiffusionTxt2ImgProcessingAPI"}}}},
                "responses": merge(ok("The images", json!({"$ref": "#/components/schemas/TextToImageResponse"})), error_responses())}},
            "/sdapi/v1/img2img": {"post": {
                "summary": "Image to image and inpainting",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/StableDiffusionImg2ImgProcessingAPI"}}}},
                "responses": merge(ok("The images", json!({"$ref": "#/components/schemas/TextToImageResponse"})), error_responses())}},
            "/sdapi/v1/loras": {"get": {"summary": "LoRAs in the LoRA folder (name, alias, path, ss_* metadata)", "responses": ok("LoRAs", list.clone())}},
            "/sdapi/v1/refresh-loras": {"post": {"summary": "Scan the LoRA folder again", "responses": ok("Done", json!({}))}},
            "/sdapi/v1/sd-models": {"get": {"summary": "The loaded checkpoint", "responses": ok("Models", list.clone())}},
            "/sdapi/v1/samplers": {"get": {"summary": "Samplers (A1111 names)", "responses": ok("Samplers", list.clone())}},
            "/sdapi/v1/schedulers": {"get": {"summary": "Schedule types", "responses": ok("Schedulers", list)}},
            "/sdapi/v1/progress": {"get": {"summary": "Progress of the running job, with current_image (a base64 PNG preview of its latents)",
                "parameters": [{"name": "skip_current_image", "in": "query", "schema": {"type": "boolean", "default": false}}],
                "responses": ok("Progress", any.clone())}},
            "/sdapi/v1/interrupt": {"post": {"summary": "Stop the caller's running job at its next step", "responses": ok("Whether a job was interrupted", any.clone())}},
            "/sdapi/v1/options": {
                "get": {"summary": "sd_model_checkpoint, CLIP_stop_at_last_layers", "responses": ok("Options", any.clone())},
                "post": {"summary": "Set CLIP_stop_at_last_layers (sd_model_checkpoint must name the loaded model)",
                         "requestBody": {"content": {"application/json": {"schema": any.clone()}}},
                         "responses": merge(ok("Set", any.clone()), error_responses())}},
            "/metrics": {"get": {"summary": "Prometheus text format: queue, jobs by status, step times, LoRA cache, GPU pool bytes (lorafuse's own)",
                "responses": {"200": {"description": "Metrics", "content": {"text/plain": {}}}}}},
            "/lorafuse/v1/tier": {"get": {"summary": "The caller's tier and its limits (lorafuse's own)", "responses": merge(ok("Tier", any.clone()), error_responses())}},
            "/": {"get": {"summary": "The web page", "responses": {"200": {"description": "HTML", "content": {"text/html": {}}}}}},
            "/openapi.json": {"get": {"summary": "This document", "responses": ok("OpenAPI 3", any)}}
        }
    })
}
