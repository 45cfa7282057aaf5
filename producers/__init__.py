"""Agency-side publishing: validate a signal, encode it in Avro, produce it to the agency's
ingress topic and wait for the broker's acknowledgement."""
