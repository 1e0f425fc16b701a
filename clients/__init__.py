"""Client SDKs generated from the worker's job contract (`clients/schema/contract.json`); see `clients.codegen`."""
