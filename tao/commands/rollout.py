"""`tao rollout`: move traffic to a distilled checkpoint gradually, through a running gateway."""

from __future__ import annotations

import argparse

from gateway.config import DistillConfig


def add_parser(sub: argparse._SubParsersAction) -> None:
    rollout = sub.add_parser(
        "rollout", help="move traffic to a distilled checkpoint gradually",
        description="Talk to a running gateway's /admin/rollout routes (--url, default $TAO_URL or "
        "http://127.0.0.1:8000; --admin-key, default $TAO_AUTH__ADMIN_KEY). `start` loads the checkpoint's "
        "adapter and gives it a canary share; the gateway's policy then steps it up or rolls it back on "
        "measured reward; `promote` and `rollback` override it; `check` runs the policy once now.")
    rollout.add_argument("action", choices=["status", "start", "promote", "rollback", "check"])
    rollout.add_argument("target", nargs="?", help="start: the checkpoint id; promote/rollback/check: the model")
    rollout.add_argument("--model", default=DistillConfig.model_fields["model"].default,
                         help="start: the public model (default: %(default)s)")
    rollout.add_argument("--canary", type=float,
                         help="start: initial share in percent (default: the first of the gateway's rollout.steps)")
    rollout.add_argument("--best-of", type=int,
                         help="start: N for the candidate arm (default: the gateway's rollout.candidate_best_of; "
                         "with auto, the k distill chose for the checkpoint)")
    rollout.add_argument("--url")
    rollout.add_argument("--admin-key")
    rollout.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import os

    import httpx
    from rich.console import Console

    from tao.console import print_rollouts

    if args.action != "status" and not args.target:
        raise SystemExit(f"tao rollout {args.action} <{'checkpoint' if args.action == 'start' else 'model'}>")
    model = args.model if args.action == "start" else args.target
    url = (args.url or os.environ.get("TAO_URL") or "http://127.0.0.1:8000").rstrip("/")
    key = args.admin_key or os.environ.get("TAO_AUTH__ADMIN_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    console = Console()
    try:
        if args.action == "status":
            response = httpx.get(f"{url}/admin/rollout", headers=headers, timeout=60)
        elif args.action == "start":
            body = {"checkpoint": args.target, "canary": args.canary, "best_of": args.best_of}
            response = httpx.post(f"{url}/admin/rollout/{model}/start", json=body, headers=headers, timeout=600)
        else:
            response = httpx.post(f"{url}/admin/rollout/{model}/{args.action}", headers=headers, timeout=60)
    except httpx.HTTPError as exc:
        console.print(f"cannot reach the gateway at {url}: {exc}", style="red")
        return 1
    data = response.json()
    if response.status_code != 200:
        console.print(f"{response.status_code}: {data.get('error', {}).get('message', data)}", style="red")
        return 1
    if args.action == "check":
        console.print(f"{data['action']}: {data['reason']}")
        return 0
    print_rollouts(data["rollouts"] if args.action == "status" else [data], console)
    return 0
