"""The Pulumi program for the F5-TTS endpoint: a B2 bucket, its worker key and a RunPod
endpoint (RunPod's REST API v2).

This package lives inside the program directory (`infra/`) on purpose: Pulumi starts the dynamic-provider host
with the program directory as its working directory, and unpickles the providers stored in the state by module
name, so their modules must be importable from there (`f5tts_infra.b2_bucket`, `f5tts_infra.runpod_endpoint`).
Keep this file free of imports so the provider host loads only what a provider needs.
"""
