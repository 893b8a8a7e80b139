"""What the workers' stop agreement costs (trainer/resilience/agreement.py): two local workers vote 300 times.

    .venv/bin/python bench/stop_agreement.py [--votes=300]

Prints the time of one vote (a two-number all-reduce between the workers, its tf.function call and the read-back)
and of a call between two votes (nothing but counting), and what that makes per training step at the interval
the agreement keeps (a vote about every CHECK_SECONDS of training).
"""

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import clean_env, free_ports  # noqa: E402


def worker(index, hosts, votes):
    os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}})
    import trainer  # noqa: F401  (tf-keras before TensorFlow)
    from trainer.training import distribution
    from trainer.resilience import agreement
    strategy = distribution.get_strategy("multi_worker_mirrored")
    vote = agreement.StopAgreement(strategy)
    vote.agree(None, final=True)  # traces the tf.function
    started = time.perf_counter()
    for _ in range(votes):
        vote.agree(None, final=True)
    per_vote = (time.perf_counter() - started) / votes
    vote.interval = 10 ** 9
    started = time.perf_counter()
    for _ in range(100000):
        vote.agree(None)
    per_skip = (time.perf_counter() - started) / 100000
    if index == 0:
        print(json.dumps({"vote_ms": round(per_vote * 1000, 3), "between_votes_us": round(per_skip * 1e6, 2),
                          "check_seconds": agreement.CHECK_SECONDS}), flush=True)
    os._exit(0)  # TensorFlow's multi-worker shutdown would wait for the other task


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--votes", type=int, default=300)
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--hosts", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        return worker(args.worker, args.hosts.split(","), args.votes)
    hosts = ",".join(f"localhost:{port}" for port in free_ports(2))
    workers = [subprocess.Popen([sys.executable, __file__, f"--worker={i}", f"--hosts={hosts}",
                                 f"--votes={args.votes}"], env=clean_env({"TF_CPP_MIN_LOG_LEVEL": "2"}),
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) for i in range(2)]
    out = workers[0].communicate(timeout=300)[0]
    workers[1].wait(timeout=60)
    result = json.loads(out.strip().splitlines()[-1])
    print(f"one vote: {result['vote_ms']} ms; a call between two votes: {result['between_votes_us']} us; "
          f"a vote about every {result['check_seconds']} s of training: "
          f"{result['vote_ms'] / (result['check_seconds'] * 1000):.2%} of the training time, "
          f"plus the call between votes once per execution")


if __name__ == "__main__":
    main()
