# Sourced by bench/gpu.sh and scripts/gpu_epsilon.sh: install_wheels installs the wheels found in
# .whl/ or shared/wheels/ offline into /tmp/site and puts it on PYTHONPATH (for a device machine
# whose Python lacks a package and reaches no registry). Make them here, e.g.
#     python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#         --platform manylinux2014_x86_64 -d .whl ml_collections==1.1.0
# naming every missing dependency too, one version of each. Uses $PY (the Python to install for).

install_wheels() {
  local dir
  for dir in .whl shared/wheels; do
    if compgen -G "$dir/*.whl" >/dev/null; then
      echo "== installing carried wheels from $dir (offline)"
      if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
          --find-links "$dir" --target /tmp/site "$dir"/*.whl; then
        export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
      else
        echo "!! pip install from $dir failed (going on without it)"
      fi
    fi
  done
}
