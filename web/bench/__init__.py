"""The benchmarks behind `switchboard bench`, and the rigs they build (a PBX and a carrier
Asterisk, the controller, probes that send and hear known tones), which the integration
and browser tests build on too."""
