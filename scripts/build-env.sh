# Sourced by the scripts that build tools: how their Go compilers collect
# garbage. At the default GOGC=100 the compiler spends about a fifth of its
# CPU in the collector (measured here, compiling k8s.io/api and client-go from
# an empty build cache: 219 CPU-seconds, 177 with this). Collecting only near a
# heap limit costs memory instead, which a build has: the largest package of
# all those built here allocates about 1 GiB in all. The limit leaves room for
# four builds at once (make test's most), each running one compiler per core.
# Only builds: long-running Go programs (API servers, tests) keep the default.
mem_mib=$(awk '$1=="MemTotal:"{print int($2/1024)}' /proc/meminfo 2>/dev/null || echo 0)
limit_mib=$((mem_mib / (4 * $(nproc))))
[ "$limit_mib" -le 2048 ] || limit_mib=2048
if [ "$limit_mib" -ge 256 ]; then
	export GOGC=off GOMEMLIMIT="${limit_mib}MiB"
fi
unset mem_mib limit_mib
