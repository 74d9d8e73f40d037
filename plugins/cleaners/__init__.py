"""Cleaner plugins: the cleaner stages (basic, standard) and the cleaning steps they compose."""

from lmforge import hookimpl

STEPS = {
    "normalize": "basic:Normalize",
    "exact_dedup": "basic:ExactDedup",
    "quality": "basic:Quality",
    "gopher_quality": "heuristics:GopherQuality",
    "gopher_repetition": "heuristics:GopherRepetition",
    "c4_quality": "heuristics:C4Quality",
    "fineweb_quality": "heuristics:FineWebQuality",
    "boilerplate": "boilerplate:Boilerplate",
    "menu_lines": "heuristics:BoilerplateLines",
    "minhash_dedup": "dedup:MinHashDedup",
    "language": "content:LanguageFilter",
    "pii": "content:PIIRedact",
    "harmful": "content:HarmfulContent",
    "decontaminate": "decontaminate:Decontaminate",
}


@hookimpl
def lmforge_cli_commands():
    return {"audit": ("review what the cleaner removed in a local web page; mark wrong removals to keep them",
                      "lmforge.plugins.cleaners.audit:audit_main")}


@hookimpl
def lmforge_register(registry):
    registry.add("cleaner", "basic", "lmforge.plugins.cleaners.basic:BasicCleaner")
    registry.add("cleaner", "standard", "lmforge.plugins.cleaners.standard:StandardCleaner")
    for name, target in STEPS.items():
        registry.add("cleaning_step", name, f"lmforge.plugins.cleaners.{target}")
