# Builds the vmruntime-gate image that manifests/ refers to (vmruntime-gate:0.1.0).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin vmruntime-gate

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/vmruntime-gate /usr/local/bin/vmruntime-gate
ENTRYPOINT ["/usr/local/bin/vmruntime-gate"]
