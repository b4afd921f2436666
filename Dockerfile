# The in-cluster controller's image (docs/controller.md): one static musl binary FROM scratch, run as
# a non-root user. Build it with scripts/build-image.sh (which also works without docker: it then
# builds the static binary only).
#
# The image holds no production keyring (see scripts/release.sh): the controller reads its license
# and keyring from the Secret modekeeper-license. The Kubernetes client trusts the in-cluster
# service-account CA, so the image needs no system CA bundle.

FROM docker.io/library/rust:1.95-bookworm AS build
# ring compiles C and assembly: the musl target needs musl-gcc.
RUN apt-get update \
    && apt-get install -y --no-install-recommends musl-tools \
    && rm -rf /var/lib/apt/lists/* \
    && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
# What `cargo build` reads: the manifests of every workspace member and path dependency (tests/kube-sim,
# policies/*), the embedded policies (policies/dist), WIT, docs and test data embedded by the binary.
COPY Cargo.toml Cargo.lock build.rs ./
COPY src src
COPY benches benches
COPY policies policies
COPY wit wit
COPY docs docs
COPY tests tests
RUN cargo build --locked --profile dist --target x86_64-unknown-linux-musl --bin kubectl-modekeeper \
    && cp target/x86_64-unknown-linux-musl/dist/kubectl-modekeeper /kubectl-modekeeper

FROM scratch
COPY --from=build /kubectl-modekeeper /kubectl-modekeeper
COPY LICENSE /LICENSE
# The Deployment's runAsUser (src/install/mod.rs RUN_AS_USER); scratch has no /etc/passwd.
USER 65532:65532
ENTRYPOINT ["/kubectl-modekeeper"]
CMD ["controller"]
