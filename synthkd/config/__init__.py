"""Pipeline configuration: pydantic models that mirror the YAML, and the loader."""

from synthkd.config.endpoints import EndpointConfig, Prices, Sampling, ServeConfig
from synthkd.config.loader import LoadedPipeline, load_pipeline
from synthkd.config.pipeline import AnyStage, PipelineConfig, stage_types
from synthkd.config.stages import GenerateStage, LionStage, LoadStage, SFTStage

__all__ = [
    "EndpointConfig", "Prices", "Sampling", "ServeConfig", "LoadedPipeline", "load_pipeline",
    "PipelineConfig", "AnyStage", "stage_types", "GenerateStage", "LionStage", "LoadStage", "SFTStage",
]
