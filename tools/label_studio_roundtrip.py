"""The API half of tools/label_studio_roundtrip.sh, run by the Python of Label Studio's own virtual
environment (label-studio-sdk): two projects from one configuration and one selection's tasks, one
labelled cleanly and one the way real labelling goes wrong, each exported in three formats."""
import argparse
import csv
import json
import urllib.request
from xml.etree import ElementTree
from pathlib import Path

from label_studio_sdk import LabelStudio

EXPORTS = {"JSON": "json", "JSON_MIN": "min.json", "CSV": "csv"}


def choice(label):
    """One result of the configuration's single-choice list, as the labelling page sends it."""
    return [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [label]}}]


def project_with_tasks(client, title, config, storage, tasks):
    project = client.projects.create(title=title, label_config=config)
    # Local files are served only below a local storage of the project (not synced: the tasks come from the file).
    client.import_storage.local.create(project=project.id, path=storage, title="dataset folder")
    client.projects.import_tasks(id=project.id, request=tasks)
    imported = {task.data["pool_path"]: task for task in client.tasks.list(project=project.id)}
    assert len(imported) == len(tasks), (len(imported), len(tasks))
    return project, [imported[task["data"]["pool_path"]] for task in tasks]  # in the file's order


def check_image_served(url, token, task):
    request = urllib.request.Request(url + task.data["image"], headers={"Authorization": f"Token {token}"})
    with urllib.request.urlopen(request) as response:
        body = response.read()
    assert body.startswith(b"\x89PNG"), body[:80]
    print(f"served {task.data['image']}: {len(body)} bytes of PNG")


def export(client, project, name, out):
    for kind, suffix in EXPORTS.items():
        path = out / f"{name}.{suffix}"
        path.write_bytes(b"".join(client.projects.exports.download_sync(project.id, export_type=kind)))
        print(f"exported {kind}: {path} ({path.stat().st_size} bytes)")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for flag in ("url", "token", "second_token", "storage", "tasks", "config", "out"):
        p.add_argument(f"--{flag}", required=True)
    p.add_argument("--truth", help="path,label CSV of the true classes (else the tasks' majority is answered)")
    args = p.parse_args()
    owner = LabelStudio(base_url=args.url, api_key=args.token)
    second = LabelStudio(base_url=args.url, api_key=args.second_token)
    config, tasks = Path(args.config).read_text(), json.loads(Path(args.tasks).read_text())
    truth = {}
    if args.truth:
        with open(args.truth, newline="") as f:
            truth = {row["path"]: row["label"] for row in csv.DictReader(f)}
    classes = [element.get("value") for element in ElementTree.fromstring(config).iter("Choice")]
    out = Path(args.out)

    def answer(task):
        return truth.get(task.data["pool_path"]) or task.data["majority"]

    def wrong(task):
        return next(c for c in classes if c != answer(task))  # a class of the dataset, not the right one

    project, clean = project_with_tasks(owner, "clean: every image labelled once", config, args.storage, tasks)
    check_image_served(args.url, args.token, clean[0])
    for task in clean:
        owner.annotations.create(id=task.id, result=choice(answer(task)), lead_time=2.5)
    export(owner, project, "clean", out)

    project, messy = project_with_tasks(owner, "messy: skips, a disagreement, a task left", config, args.storage,
                                        tasks)
    first, disputed, untouched, skipped_then_labelled, agreed, *rest = messy
    owner.annotations.create(id=first.id, result=[], was_cancelled=True)  # the page's Skip
    owner.annotations.create(id=disputed.id, result=choice(answer(disputed)), lead_time=3.0)
    second.annotations.create(id=disputed.id, result=choice(wrong(disputed)), lead_time=4.0)
    owner.annotations.create(id=skipped_then_labelled.id, result=[], was_cancelled=True)
    second.annotations.create(id=skipped_then_labelled.id, result=choice(answer(skipped_then_labelled)), lead_time=2.0)
    owner.annotations.create(id=agreed.id, result=choice(answer(agreed)), lead_time=1.5)
    second.annotations.create(id=agreed.id, result=choice(answer(agreed)), lead_time=1.0)
    for task in rest:
        owner.annotations.create(id=task.id, result=choice(answer(task)), lead_time=2.0)
    print(f"messy: skipped {first.data['pool_path']}; {disputed.data['pool_path']}: {answer(disputed)} (owner) "
          f"versus {wrong(disputed)} (second); left {untouched.data['pool_path']} alone; "
          f"{skipped_then_labelled.data['pool_path']} skipped by the owner, labelled by the second; "
          f"{agreed.data['pool_path']} labelled {answer(agreed)} by both")
    export(owner, project, "messy", out)


if __name__ == "__main__":
    main()
