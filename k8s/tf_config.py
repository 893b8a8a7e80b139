#!/usr/bin/env python3
"""Builds TF_CONFIG for one pod of a Kubernetes Indexed Job, then runs the trainer with it.

    python3 k8s/tf_config.py fmnist-train --model=cnn ...     (the multi-worker pods' container command)

Every pod of the multi-worker JobSet's Indexed child Job (k8s/overlays/multi-worker) runs this same command;
only its completion index differs. Worker i of N gets

    TF_CONFIG={"cluster": {"worker": [HOST_0, ..., HOST_N-1]}, "task": {"type": "worker", "index": i}}

and worker 0 is the chief (the trainer's rule when the cluster names no `chief`). The environment it reads:

| variable | meaning | default |
| --- | --- | --- |
| `JOB_COMPLETION_INDEX` | this pod's index, 0..N-1 (Kubernetes sets it in an Indexed Job) | required |
| `WORKER_COUNT` | N, the Job's `completions` and `parallelism` | required unless `TF_CONFIG_HOSTS` |
| `JOB_NAME` | the (child) Job's name (the pod label `job-name`) | needed by the default template |
| `WORKER_SERVICE` | the headless Service, the pods' `subdomain` | needed by the default template |
| `TF_CONFIG_PORT` | the port every worker listens on | 2222 |
| `JOBSET_NAME` | the JobSet's name (the pod label `jobset.sigs.k8s.io/jobset-name`) | needed by `{jobset}` |
| `WORKER_HOST_TEMPLATE` | the address of worker `{index}`; may use `{index}`, `{job}`, `{service}`, `{jobset}`, `{port}` | `{job}-{index}.{service}:{port}` |
| `TF_CONFIG_HOSTS` | comma-separated `host:port` of every worker, in index order; overrides the three above | unset |

The default template gives the DNS names Kubernetes creates for an Indexed Job whose pods have `subdomain` set
to a headless Service: `<job>-<index>.<service>`. In a JobSet (`network.enableDNSHostnames`) the child Job is
named `<jobset>-<replicatedJob>-<jobIndex>`, so the same template gives the names JobSet documents,
`<jobset>-<replicatedJob>-<jobIndex>-<podIndex>.<subdomain>` (one replicated Job, one replica: the cluster is
that child Job's pods). A Kubeflow Trainer TrainJob (k8s/trainjob) is a JobSet named after the TrainJob, of one
replicated Job `node` whose subdomain is the JobSet's name: its runtime sets
`WORKER_HOST_TEMPLATE={jobset}-node-0-{index}.{jobset}:{port}`, JOBSET_NAME through the downward API and WORKER_COUNT
to the TrainJob's numNodes. To run the same command as local processes, give each
process its own index and the local addresses instead, e.g.
`TF_CONFIG_HOSTS=localhost:23456,localhost:23457 JOB_COMPLETION_INDEX=1 python3 k8s/tf_config.py fmnist-train ...`.

A bad setting ends the process with status 2 and one line that says what is wrong, before the trainer starts.
Standard library only: it runs on any Python 3, in the image or beside it.
"""

import json
import os
import sys

DEFAULT_TEMPLATE = "{job}-{index}.{service}:{port}"
DEFAULT_PORT = "2222"


class ConfigError(ValueError):
    """A setting that makes TF_CONFIG impossible to build; the message says which and why."""


def _whole_number(environ, name, minimum):
    raw = environ.get(name, "").strip()
    if not raw:
        raise ConfigError(f"{name} is not set")
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from None
    if value < minimum:
        raise ConfigError(f"{name}={value} must be at least {minimum}")
    return value


def worker_hosts(environ):
    """The `host:port` of every worker, in index order."""
    listed = environ.get("TF_CONFIG_HOSTS", "").strip()
    if listed:
        hosts = [host.strip() for host in listed.split(",")]
        if "WORKER_COUNT" in environ and _whole_number(environ, "WORKER_COUNT", 1) != len(hosts):
            raise ConfigError(f"TF_CONFIG_HOSTS names {len(hosts)} workers but WORKER_COUNT={environ['WORKER_COUNT']}")
    else:
        count = _whole_number(environ, "WORKER_COUNT", 1)
        template = environ.get("WORKER_HOST_TEMPLATE") or DEFAULT_TEMPLATE
        if "{index}" not in template:
            raise ConfigError(f"WORKER_HOST_TEMPLATE={template!r} must contain {{index}}: every worker needs its own "
                              "address")
        fields = {"port": environ.get("TF_CONFIG_PORT") or DEFAULT_PORT, "job": environ.get("JOB_NAME", ""),
                  "service": environ.get("WORKER_SERVICE", ""), "jobset": environ.get("JOBSET_NAME", "")}
        for placeholder, variable in (("{job}", "JOB_NAME"), ("{service}", "WORKER_SERVICE"),
                                      ("{jobset}", "JOBSET_NAME")):
            if placeholder in template and not fields[placeholder[1:-1]]:
                raise ConfigError(f"{variable} is not set (WORKER_HOST_TEMPLATE={template!r} uses {placeholder})")
        try:
            hosts = [template.format(index=index, **fields) for index in range(count)]
        except (KeyError, IndexError, ValueError) as error:
            raise ConfigError(f"WORKER_HOST_TEMPLATE={template!r} is not usable: only {{index}}, {{job}}, "
                              f"{{service}}, {{jobset}} and {{port}} may appear ({error})") from None
    for host in hosts:
        name, _, port = host.rpartition(":")
        if not name or not port.isdigit():
            raise ConfigError(f"worker address {host!r} is not HOST:PORT")
    if len(set(hosts)) != len(hosts):
        raise ConfigError(f"worker addresses are not all different: {','.join(hosts)}")
    return hosts


def build_tf_config(environ):
    """The TF_CONFIG dict of the pod whose environment is `environ`."""
    hosts = worker_hosts(environ)
    index = _whole_number(environ, "JOB_COMPLETION_INDEX", 0)
    if index >= len(hosts):
        raise ConfigError(f"JOB_COMPLETION_INDEX={index} is out of range for {len(hosts)} workers")
    return {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}}


def main(argv, environ):
    if not argv:
        print("usage: tf_config.py COMMAND [ARG...]   (builds TF_CONFIG from the environment, then runs COMMAND)",
              file=sys.stderr)
        return 2
    if environ.get("TF_CONFIG"):
        print("tf_config: error: TF_CONFIG is already set; unset it, or run the trainer without this launcher",
              file=sys.stderr)
        return 2
    try:
        tf_config = build_tf_config(environ)
    except ConfigError as error:
        print(f"tf_config: error: {error}", file=sys.stderr)
        return 2
    value = json.dumps(tf_config, separators=(",", ":"))
    print(f"tf_config: TF_CONFIG={value}", file=sys.stderr, flush=True)
    env = dict(environ, TF_CONFIG=value)
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as error:
        print(f"tf_config: error: cannot run {argv[0]!r}: {error.strerror}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], os.environ))
