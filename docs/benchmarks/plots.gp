set terminal pngcairo size 900,560 font ',11'
set grid
set key outside right
set output 'docs/benchmarks/latency.png'
set title 'End-to-end message latency, open loop (median of runs)'
set xlabel 'offered messages/s'
set ylabel 'latency, ms'
set logscale y
set xtics ('1,000' 1000, '5,000' 5000, '20,000' 20000)
set logscale x
plot 'docs/benchmarks/latency-conclave.dat' using 1:3 with linespoints lc 1 dt 1 pt 6 lw 2 title 'conclave p99', 'docs/benchmarks/latency-conclave.dat' using 1:2 with linespoints lc 1 dt 2 pt 6 lw 2 title 'conclave p50', 'docs/benchmarks/latency-ejabberd.dat' using 1:3 with linespoints lc 2 dt 1 pt 8 lw 2 title 'ejabberd p99', 'docs/benchmarks/latency-ejabberd.dat' using 1:2 with linespoints lc 2 dt 2 pt 8 lw 2 title 'ejabberd p50', 'docs/benchmarks/latency-prosody.dat' using 1:3 with linespoints lc 3 dt 1 pt 10 lw 2 title 'prosody p99', 'docs/benchmarks/latency-prosody.dat' using 1:2 with linespoints lc 3 dt 2 pt 10 lw 2 title 'prosody p50', 'docs/benchmarks/latency-relay.dat' using 1:3 with linespoints lc 4 dt 1 pt 12 lw 2 title 'relay p99', 'docs/benchmarks/latency-relay.dat' using 1:2 with linespoints lc 4 dt 2 pt 12 lw 2 title 'relay p50'
set output 'docs/benchmarks/memory.png'
set title 'Server memory per idle signed-in session (RSS, median of runs)'
set xlabel 'sessions online'
set ylabel 'KiB per session'
unset logscale y
set yrange [0:*]
set xtics ('1,000' 1000, '10,000' 10000, '50,000' 50000)
plot 'docs/benchmarks/memory-conclave.dat' using 1:2 with linespoints lc 1 pt 6 lw 2 title 'conclave', 'docs/benchmarks/memory-ejabberd.dat' using 1:2 with linespoints lc 2 pt 8 lw 2 title 'ejabberd', 'docs/benchmarks/memory-prosody.dat' using 1:2 with linespoints lc 3 pt 10 lw 2 title 'prosody', 'docs/benchmarks/memory-relay.dat' using 1:2 with linespoints lc 4 pt 12 lw 2 title 'relay'
