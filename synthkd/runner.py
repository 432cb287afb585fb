"""Run a pipeline: validate, then stages in order, skipping those whose output is already whole."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from synthkd.client.accounting import Meter
from synthkd.config.loader import LoadedPipeline
from synthkd.config.stages import (
    DecontaminateStage, DPOStage, EvalStage, GenerateStage, LionStage, LoadStage, RationaleStage, SFTStage, Stage,
)
from synthkd.errors import BudgetExceeded, EndpointError
from synthkd.config.montessori import MontessoriStage
from synthkd.config.skd import SKDStage
from synthkd.montessori.loop import MontessoriRun
from synthkd.dpo.loop import DPORun
from synthkd.skd.loop import SKDRun
from synthkd.lion.loop import LionRun
from synthkd.outputs import is_done, load_output
from synthkd.progress import Reporter
from synthkd.runtime import Runtime, digest
from synthkd.scoring.code_judge import is_code_judge
from synthkd.settings import Settings
from synthkd.stages.decontaminate import decontaminate
from synthkd.stages.evaluate import run_eval
from synthkd.stages.generate import run_generate
from synthkd.stages.rationale import run_rationale
from synthkd.stages.load import load_rows
from synthkd.stages.sft import run_sft
from synthkd.validate import Plan, validate_pipeline


def default_run_dir(loaded: LoadedPipeline) -> Path:
    return Path("runs") / loaded.config.name


def preflight(rt: Runtime, plan: Plan) -> None:
    """Reach every remote endpoint once (GET /models: no tokens spent) before the first paid call."""
    for name in sorted(plan.endpoints_used):
        cfg = rt.config.endpoints[name]
        if cfg.served:
            continue
        key = rt.api_key(name)
        request = urllib.request.Request(f"{cfg.base_url.rstrip('/')}/models")  # type: ignore[union-attr]
        if key:
            request.add_header("Authorization", f"Bearer {key}")
        try:
            with urllib.request.urlopen(request, timeout=min(cfg.timeout_s, 15)):
                pass
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                raise EndpointError(
                    f"endpoint {name!r} rejected the API key ({exc.code})", where=f"endpoints.{name}",
                    fix=f"check the key in ${cfg.api_key_env}",
                ) from None
            # Other statuses (some providers have no /models): the endpoint is reachable.
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise EndpointError(
                f"endpoint {name!r} is unreachable at {cfg.base_url}: {reason}", where=f"endpoints.{name}.base_url",
                fix="start the server or fix base_url (--set endpoints.%s.base_url=URL)" % name,
            ) from None


def _stage_templates(rt: Runtime, stage: Stage) -> dict[str, str]:
    """Template name -> hash, for the templates a stage renders."""
    if isinstance(stage, GenerateStage):
        names = [stage.template] + ([stage.system_template] if stage.system_template else [])
    elif isinstance(stage, LionStage):
        t = stage.templates
        names = [t.answer, t.referee, t.generate_hard, t.generate_easy]
    elif isinstance(stage, DPOStage):
        names = [stage.templates.answer, stage.templates.pairwise, stage.templates.pointwise]
    elif isinstance(stage, EvalStage):
        names = [stage.templates.answer] + ([stage.templates.pairwise] if stage.teacher else [])
    elif isinstance(stage, RationaleStage):
        names = [stage.template, stage.inline_template]
    elif isinstance(stage, MontessoriStage):
        names = [stage.synthesis.template, "lion/answer.jinja2"] + (["dpo/score.jinja2"] if stage.signal == "judge" else [])
    elif isinstance(stage, SKDStage):
        names = sorted({stage.heads.template, stage.critic.judge_template, stage.student_template,
                        *(r.template for r in (stage.relations or {}).values())} | ({"skd/tail.jinja2"} if not stage.relations else set()))
    else:
        names = []
    return {n: rt.prompts.get(n).sha256 for n in names}


def _stage_endpoints(stage: Stage) -> list[str]:
    if isinstance(stage, GenerateStage):
        return [stage.endpoint]
    if isinstance(stage, LionStage):
        return _endpoints_only([stage.teacher, stage.referee, stage.student])
    if isinstance(stage, DPOStage):
        return _endpoints_only([stage.teacher, stage.judge, stage.student])
    if isinstance(stage, EvalStage):
        return _endpoints_only([stage.student] + ([stage.teacher, stage.judge] if stage.teacher else []))
    if isinstance(stage, RationaleStage):
        return [stage.teacher]
    if isinstance(stage, SKDStage):
        return [stage.teacher, stage.judge] + ([stage.student] if stage.student else [])
    if isinstance(stage, MontessoriStage):
        extra = {"judge": [stage.judge], "icl_accuracy": [stage.student]}.get(stage.signal, [])
        return [stage.teacher, stage.responder, *extra]
    return []


def _endpoints_only(names: list[str]) -> list[str]:
    """Endpoint names, without judges that are code (`code:rouge_l`, ...)."""
    return [n for n in names if not is_code_judge(n)]


def _stage_fingerprint(rt: Runtime, stage: Stage, input_fp: str | None) -> str:
    templates = _stage_templates(rt, stage)
    endpoints = _stage_endpoints(stage)
    if isinstance(stage, LoadStage):
        path = rt.pipeline.resolve(stage.path)
        source = digest([str(path), path.stat().st_size, path.stat().st_mtime_ns]) if path.is_file() else str(path)
    else:
        source = None
    return digest({
        "stage": stage.model_dump(), "input": input_fp, "templates": templates, "source": source,
        "endpoints": {e: rt.endpoint_identity(e) for e in endpoints}, "seed": rt.config.seed,
    })


async def _run_stage(rt: Runtime, stage: Stage, rows: list[dict[str, Any]], outputs: dict[str, list[dict[str, Any]]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]], Meter, dict[str, Any]]:
    meter = Meter()
    if isinstance(stage, LoadStage):
        return load_rows(stage, rt.pipeline.resolve(stage.path), f"stages.{stage.name}.path"), [], meter, {}
    if isinstance(stage, GenerateStage):
        kept, failed = await run_generate(stage, rt, rows, meter)
        return kept, failed, meter, {}
    if isinstance(stage, SFTStage):
        return rows, [], meter, await run_sft(stage, rt, rows)
    if isinstance(stage, LionStage):
        lion = LionRun(stage, rt, rows, outputs.get(stage.heldout, []) if stage.heldout else [])
        out = await lion.run()
        return out["rows"], out["failed"], out["meter"], {}
    if isinstance(stage, DPOStage):
        dpo = DPORun(stage, rt, rows, outputs.get(stage.heldout, []) if stage.heldout else [])
        out = await dpo.run()
        return out["rows"], out["failed"], out["meter"], {}
    if isinstance(stage, EvalStage):
        scored, failed, summary = await run_eval(stage, rt, rows, meter)
        return scored, failed, meter, {"eval": summary}
    if isinstance(stage, DecontaminateStage):
        kept, dropped, counts = decontaminate(stage, rows, outputs.get(stage.against, []))
        return kept, dropped, meter, {"decontamination": counts}
    if isinstance(stage, MontessoriStage):
        run = MontessoriRun(stage, rt, rows, outputs.get(stage.reference, []), outputs.get(stage.icl_probe, []) if stage.icl_probe else [])
        out = await run.run()
        return out["rows"], out["failed"], out["meter"], {}
    if isinstance(stage, SKDStage):
        skd = SKDRun(stage, rt, rows, outputs.get(stage.heldout, []) if stage.heldout else [])
        out = await skd.run()
        return out["rows"], out["failed"], out["meter"], {"skd": out["summary"], "critic": out["summary"].get("critic", {})}
    if isinstance(stage, RationaleStage):
        sft_rows, failed, summary, per_input = await run_rationale(stage, rt, rows, meter)
        rt.write_dataset(f"{stage.name}.per_input", per_input, [], fingerprint=digest(per_input), fmt="records",
                         description=f"Stage {stage.name}: rationales kept per input (rejection sampling / self-consistency).")
        return sft_rows, failed, meter, {"rationale": summary}
    raise AssertionError(type(stage))


async def run_pipeline(loaded: LoadedPipeline, run_dir: Path, settings: Settings, reporter: Reporter,
                       weights: dict[str, str] | None = None) -> dict[str, Any]:
    """Run every stage; returns run.json's content. Raises SynthkdError subclasses on failure.

    `weights` serves endpoints from given weights from the start (e.g. `synthkd eval --model`).
    """
    plan = validate_pipeline(loaded, settings)
    rt = Runtime(loaded, run_dir, settings, reporter)
    for endpoint, path in (weights or {}).items():
        rt.serve_weights(endpoint, path)
    state = rt.state
    try:
        preflight(rt, plan)
        rows: dict[str, list[dict[str, Any]]] = {}
        fps: dict[str, str] = {}
        invocation = Meter()  # what this invocation did (stages skipped as done count nothing)
        for stage in loaded.config.stages:
            input_name = getattr(stage, "input", None)
            upstream = [fps.get(input_name) if input_name else None] + [fps.get(getattr(stage, k, None) or "") for k in ("heldout", "against", "reference", "icl_probe")]
            fp = _stage_fingerprint(rt, stage, digest(upstream))
            fps[stage.name] = fp
            entry = state.stage(stage.name)
            if is_done(run_dir, stage.name, fp):
                rows[stage.name] = load_output(run_dir, stage.name)
                reporter.note(f"[{stage.name}] done earlier: {len(rows[stage.name])} rows (skipped)")
                entry["status"] = "done"
                _reapply_serving(rt, stage)
                continue
            entry["status"] = "running"
            state.save()
            inputs = rows.get(input_name, []) if input_name else []
            started = time.monotonic()
            out, failed, meter, extra = await _run_stage(rt, stage, inputs, rows)
            extra["elapsed_s"] = round(time.monotonic() - started, 3)
            rt.write_dataset(stage.name, out, failed, fingerprint=fp, models=_stage_models(rt, stage), fmt=_fmt(out),
                             templates=_stage_templates(rt, stage),
                             counts={"records_in": len(inputs)}, description=f"Output of stage {stage.name} ({stage.type}).")
            rows[stage.name] = out
            invocation.merge(meter)
            state.data["this_invocation"] = invocation.to_json()
            rt.record_meter(stage.name, meter, status="done", type=stage.type, records_in=len(inputs), records_out=len(out),
                            failed=len(failed), **extra)
            reporter.note(f"[{stage.name}] {len(out)} rows, {len(failed)} failed, {meter.calls} calls, {meter.cache_hits} cache hits, ${meter.cost:.4f}")
        state.data["status"] = "done"
        state.data["this_invocation"] = invocation.to_json()
    except BudgetExceeded:
        state.data["status"] = "budget_exhausted"
        raise
    except (KeyboardInterrupt, asyncio.CancelledError):
        state.data["status"] = "interrupted"
        raise
    except BaseException:
        state.data["status"] = "failed"
        raise
    finally:
        state.data["spent_usd_total"] = round(rt.cache.total_cost(), 6)
        state.save()
        await rt.aclose()
    return json.loads((run_dir / "run.json").read_text())


def _reapply_serving(rt: Runtime, stage: Stage) -> None:
    """A skipped stage that moved an endpoint onto new weights still does so, so later stages see them."""
    if isinstance(stage, SFTStage) and stage.serve_as and (rt.run_dir / "checkpoints" / stage.name).is_dir():
        rt.serve_weights(stage.serve_as, str(rt.run_dir / "checkpoints" / stage.name))
    elif isinstance(stage, DPOStage):
        final = rt.state.stage(stage.name).get("final_weights")
        if final:
            rt.serve_weights(stage.student, final)


def _fmt(rows: list[dict[str, Any]]) -> str:
    if rows and "messages" in rows[0]:
        return "sft (messages)"
    if rows and {"prompt", "chosen", "rejected"} <= rows[0].keys():
        return "preference (prompt/chosen/rejected)"
    return "records"


def _stage_models(rt: Runtime, stage: Stage) -> dict[str, str]:
    if isinstance(stage, SFTStage):
        return {"base": stage.model}
    return {e: rt.endpoint_identity(e) for e in _stage_endpoints(stage)}
