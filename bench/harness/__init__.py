"""bulwark's benchmark and recovery harness: bulwark side by side with HAProxy and nginx.

Entry point: `bench/run` (see bench/README.md). Modules:
- procs:    process registry (own process groups, cleanup), naive supervisor, /proc readers
- proxies:  HAProxy, nginx, bulwark and direct targets: configuration, start, reload, state
- measure:  wrk, h2load, `bulwark load`, idle-connection memory, CPU accounting
- traffic:  per-replica traffic from the kernel's socket counters (`ss`), sampled every 100 ms
- healing:  the healing scenarios (kill, hang, 503, slow, reload)
- killready: kill -9 → replacement ready, from bulwark's own events, for process and runc replicas
- report:   the Markdown tables, the JSON file and the PNG plots
- records:  the result records (dataclasses) and the JSON they are written as
- context:  what every measurement gets (processes, temporary directory, parameters, errors)
"""
