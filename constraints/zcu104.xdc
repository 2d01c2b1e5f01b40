# ZCU104 (xczu7ev-ffvc1156-2-e): pins of the apical UART board design.
# Read by Vivado after the XDC Amaranth's platform generates (which also holds
# create_clock for the 125 MHz clock). Port names are those Amaranth gives the
# requested resources. Pins from the ZCU104 user guide (UG1267).

# 125 MHz system clock (CLK_125_P/N, LVDS).
set_property -dict {PACKAGE_PIN F23 IOSTANDARD LVDS} [get_ports clk125_0__p]
set_property -dict {PACKAGE_PIN E23 IOSTANDARD LVDS} [get_ports clk125_0__n]

# UART on PMOD0 (J55) through a 3.3 V USB-UART adapter: pin 1 FPGA TX, pin 2 FPGA RX.
set_property -dict {PACKAGE_PIN G8 IOSTANDARD LVCMOS33} [get_ports uart_0__tx__io]
set_property -dict {PACKAGE_PIN H8 IOSTANDARD LVCMOS33} [get_ports uart_0__rx__io]

# User LEDs: LED0 = busy, LED1..3 = class bits 0..2.
set_property -dict {PACKAGE_PIN D5 IOSTANDARD LVCMOS33} [get_ports led_0__io]
set_property -dict {PACKAGE_PIN D6 IOSTANDARD LVCMOS33} [get_ports led_1__io]
set_property -dict {PACKAGE_PIN A5 IOSTANDARD LVCMOS33} [get_ports led_2__io]
set_property -dict {PACKAGE_PIN B5 IOSTANDARD LVCMOS33} [get_ports led_3__io]

# The UART lines are asynchronous to the clock (the receiver synchronises them).
set_false_path -from [get_ports uart_0__rx__io]
set_false_path -to [get_ports uart_0__tx__io]
set_false_path -to [get_ports {led_*__io}]

set_property BITSTREAM.GENERAL.COMPRESS TRUE [current_design]
