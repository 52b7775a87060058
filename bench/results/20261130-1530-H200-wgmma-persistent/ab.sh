set -uo pipefail
(cd .snap && cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DMXMOE_TESTS=ON >/dev/null && cmake --build build -j16 2>&1 | grep -E "error|FAILED") &
(cd .snapA && cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DMXMOE_TESTS=OFF >/dev/null && cmake --build build -j16 --target mxmoe 2>&1 | grep -E "error|FAILED") &
wait
cd .snap
timeout 200 ./build/tests/mxmoe_gpu_tests --gtest_color=no --gtest_filter='*WgmmaPath*:*LayerPaths*:*Lanes*:*Largest*:*Nvfp4Layer*:*WideScales*:*BatchInv*' 2>&1 | tee $OUT/tests.log | grep -E "FAILED|Failure|PASSED" | head
timeout 100 compute-sanitizer --tool memcheck --error-exitcode 9 ./build/tests/mxmoe_gpu_tests --gtest_filter='*LayerPaths*wgmma*:*Lanes*' 2>&1 | grep -E "ERROR SUMMARY|PASSED|FAILED" | tail -2
timeout 100 compute-sanitizer --tool racecheck --error-exitcode 9 ./build/tests/mxmoe_gpu_tests --gtest_filter='*LayerPaths.Repeated*wgmma*' 2>&1 | grep -E "RACECHECK SUMMARY|PASSED|FAILED" | tail -2
row() { awk -v tag="$1" '$1 ~ /^[0-9]+$/ && NF > 8 {printf "%-26s T=%-6s %9s us roof %5s %7s TF\n", tag, $1, $6, $8, $10}'; }
for p in dsv4-flash gpt-oss-120b; do for r in 1 2; do for side in A B; do
  bin=./build/mxmoe; [ $side = A ] && bin=../.snapA/build/mxmoe
  $bin bench --preset $p --tokens 256,1024,4096,16384 --reps 30 --no-bf16 --no-torch --out-dir /tmp/ab-$side 2>&1 | row "$p $side r$r"
done; done; done
for side in A B; do bin=./build/mxmoe; [ $side = A ] && bin=../.snapA/build/mxmoe
  $bin bench --preset dsv4-flash --skew 1 --tokens 256,1024,4096 --reps 30 --no-bf16 --no-torch --out-dir /tmp/abs-$side 2>&1 | row "dsv4 skew1 $side"; done
