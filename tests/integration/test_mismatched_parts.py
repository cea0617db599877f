"""Model parts that do not belong together, through POST /prompt in the real server: motion tokens of another
motion tokenizer than the one the modules file records are refused (other sizes) or run with a warning (same
sizes, another file), both naming the two tokenizers; modules files without a record load as before with one
note; IM-Animation Conditioning sampled on a model that Apply IM-Animation did not patch says so in words."""

import pytest
from integration.test_bad_inputs import full_prompt

from tools.bad_files import write_mismatched_parts
from tools.fixture_models import MODULES_NAME, TOKENIZER_NAME
from tools.server import assert_ok, execution_error

TRAINED_WITH = "were trained with motion tokenizer"
SAME_SIZES = "the same sizes, another file"
NO_RECORD = "does not record the motion tokenizer it was trained with"
UNPATCHED = "not patched by Apply IM-Animation"


@pytest.fixture(scope="module")
def parts(server):
    return write_mismatched_parts(server.base)


def retarget_prompt(tokenizer=TOKENIZER_NAME, modules=MODULES_NAME, length=9, sampler="one_node") -> dict:
    """Load Driving Video -> Encode -> Retarget (64x64) -> a sampler (2 steps) -> VAE Decode -> Preview.
    sampler: "one_node" (the pack's sampler), "patched" (Apply IM-Animation + IM-Animation Conditioning +
    KSampler), "plain" (IM-Animation Conditioning + KSampler on the model as loaded) or "plain_custom"
    (the same through SamplerCustomAdvanced)."""
    prompt = full_prompt(**{"3.tokenizer_name": tokenizer, "5.modules_name": modules, "7.length": length})
    if sampler == "one_node":
        return prompt
    model = ["20", 0] if sampler == "patched" else ["8", 0]
    prompt.update({
        "20": {"class_type": "IMA_ApplyModel", "inputs": {"model": ["8", 0], "modules": ["5", 0]}},
        "22": {"class_type": "IMA_Conditioning", "inputs": {"retargeted_motion": ["7", 0]}},
        "9": {"class_type": "TrimVideoLatent", "inputs": {"samples": ["23", 0], "trim_amount": ["22", 3]}},
    })
    if sampler == "plain_custom":
        prompt.update({
            "30": {"class_type": "RandomNoise", "inputs": {"noise_seed": 0}},
            "31": {"class_type": "CFGGuider", "inputs": {"model": model, "positive": ["22", 0],
                                                         "negative": ["22", 1], "cfg": 1.0}},
            "32": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
            "33": {"class_type": "BasicScheduler", "inputs": {"model": model, "scheduler": "simple", "steps": 2,
                                                              "denoise": 1.0}},
            "23": {"class_type": "SamplerCustomAdvanced", "inputs": {
                "noise": ["30", 0], "guider": ["31", 0], "sampler": ["32", 0], "sigmas": ["33", 0],
                "latent_image": ["22", 2]}},
        })
    else:
        prompt["23"] = {"class_type": "KSampler", "inputs": {
            "model": model, "seed": 0, "steps": 2, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple",
            "positive": ["22", 0], "negative": ["22", 1], "latent_image": ["22", 2], "denoise": 1.0}}
    if sampler != "patched":
        del prompt["20"]
    return prompt


def run_logged(server, prompt) -> tuple[dict, str]:
    """(history entry, what the server logged while it ran)."""
    before = len(server.log())
    entry = server.run(prompt)
    return entry, server.log()[before:]


def refused(server, prompt, node_type: str, starts: str) -> str:
    err = execution_error(server.run(prompt))
    assert err is not None, "the mismatched parts were accepted"
    assert err["node_type"] == node_type, (err["node_type"], err["exception_message"])
    message = err["exception_message"]
    assert message.startswith(starts + ":"), message
    assert "Traceback" not in message and str(server.base) not in message
    assert server.get("/system_stats")  # still serving
    return message


# ---- a tokenizer of other sizes: refused, naming both -------------------------------------------------------
def test_tokens_of_a_tokenizer_of_other_sizes_are_refused_naming_both(server, parts):
    # the case: the fixture set's tokenizer (width 64, codebook 256) with the demo set's modules, which
    # record the demo tokenizer (width 128, codebook 1024)
    message = refused(server, retarget_prompt(tokenizer=TOKENIZER_NAME, modules=parts["demo_modules"]),
                      "IMA_RetargetToIdentity", "Retarget to Identity")
    for words in (f"'{TOKENIZER_NAME}' (width 64, 2 layers, codebook 256",
                  "'ima_demo_motion_tokenizer.safetensors' (width 128", "codebook 1024",
                  f"'{parts['demo_modules']}'", "Load Motion Tokenizer"):
        assert words in message, message

    # the tokenizer the modules record (a copy under another name: the same file) is accepted without a word
    entry, log = run_logged(server, retarget_prompt(tokenizer=parts["demo_tokenizer"], modules=parts["demo_modules"]))
    assert_ok(entry)
    assert len(entry["outputs"]["11"]["images"]) == 9
    assert TRAINED_WITH not in log


def test_the_tokenizer_record_travels_with_saved_motion_tokens(server, parts):
    save = retarget_prompt()
    save = {k: save[k] for k in ("2", "3", "4")}
    save["12"] = {"class_type": "IMA_SaveMotionTokens", "inputs": {"motion_tokens": ["4", 0],
                                                                   "filename_prefix": "mismatched_parts"}}
    entry = server.run(save)
    assert_ok(entry)
    saved = entry["outputs"]["12"]["motion_tokens"][0]
    prompt = retarget_prompt(modules=parts["demo_modules"])
    prompt["4"] = {"class_type": "IMA_LoadMotionTokens",
                   "inputs": {"path": f"{saved['subfolder']}/{saved['filename']}"}}
    del prompt["3"]
    message = refused(server, prompt, "IMA_RetargetToIdentity", "Retarget to Identity")
    assert f"'{TOKENIZER_NAME}' (width 64" in message and "'ima_demo_motion_tokenizer.safetensors'" in message


# ---- the same sizes, another file: a warning naming both ----------------------------------------------------
def test_a_tokenizer_of_the_same_sizes_but_other_weights_runs_with_a_warning_naming_both(server, parts):
    entry, log = run_logged(server, retarget_prompt(tokenizer=parts["other_tokenizer"], length=5))
    assert_ok(entry)
    assert SAME_SIZES in log, log[-3000:]
    warning = next(line for line in log.splitlines() if SAME_SIZES in line)
    for words in (f"'{parts['other_tokenizer']}' (width 64", f"'{TOKENIZER_NAME}' (width 64", f"'{MODULES_NAME}'",
                  "Load Motion Tokenizer"):
        assert words in warning, warning

    # the fixture set's own tokenizer (recorded by its modules): no warning (length 1: a new Retarget run)
    entry, log = run_logged(server, retarget_prompt(length=1))
    assert_ok(entry)
    assert TRAINED_WITH not in log and NO_RECORD not in log


# ---- files without a record ----------------------------------------------------------------------------------
def test_modules_files_without_a_record_load_as_before_with_one_note(server, parts):
    name = parts["unrecorded_modules"]
    entry, log = run_logged(server, retarget_prompt(tokenizer=parts["other_tokenizer"], modules=name))
    assert_ok(entry)
    assert len(entry["outputs"]["11"]["images"]) == 9
    notes = [line for line in log.splitlines() if NO_RECORD in line]
    assert len(notes) == 1 and f"'{name}'" in notes[0], notes
    assert TRAINED_WITH not in log  # nothing to compare with, so no refusal or warning
    entry, log = run_logged(server, retarget_prompt(modules=name, length=5))  # the loaded modules serve again
    assert_ok(entry)
    assert NO_RECORD not in log


def test_a_damaged_record_is_refused_naming_the_file(server, parts):
    message = refused(server, retarget_prompt(modules=parts["bad_record_modules"]), "IMA_LoadModules",
                      "Load IM-Animation Modules")
    assert f"'{parts['bad_record_modules']}'" in message and "'motion_tokenizer'" in message, message
    assert "../" not in message  # the record's own text is not echoed


# ---- IM-Animation Conditioning on a model without Apply IM-Animation -----------------------------------------
@pytest.mark.parametrize("sampler, node_type", [("plain", "KSampler"), ("plain_custom", "SamplerCustomAdvanced")])
def test_sampling_the_conditioning_on_an_unpatched_model_says_so(server, sampler, node_type):
    message = refused(server, retarget_prompt(sampler=sampler), node_type, "IM-Animation Conditioning")
    assert UNPATCHED in message and "Load Diffusion Model -> Apply IM-Animation" in message, message
    assert "but got" not in message  # not the host's channel-count error


def test_the_patched_models_stock_sampler_graph_still_runs(server):
    entry = server.run(retarget_prompt(sampler="patched"))
    assert_ok(entry)
    assert len(entry["outputs"]["11"]["images"]) == 9
